// Liveness, readiness and startup probes for one container instance, with kubelet's timing rules.

import EdgedCore
import EdgedRuntime
import Glibc

/// Runs a container's probes until cancelled and reports transitions.
///
/// Timing follows kubelet: the startup probe runs first and gates the others; each probe waits
/// initialDelaySeconds, then runs every periodSeconds (default 10) with timeoutSeconds (default 1);
/// failureThreshold (default 3) consecutive failures flip it to failed, successThreshold (default 1)
/// successes back to passing. Readiness starts as not ready.
struct Prober: Sendable {
    enum Event: Sendable {
        case started
        case ready(Bool)
        case livenessFailed(String)
        case startupFailed(String)
    }

    let runtime: ContainerRuntime
    let containerID: String
    let hostNetwork: Bool

    func run(container: Container, report: @escaping @Sendable (Event) async -> Void) async {
        let begin = ContinuousClock.now
        if let startup = container.startupProbe {
            guard let ok = await loop(startup, kind: "Startup", since: begin, stopOnSuccess: true, report: { _ in }) else { return }
            if !ok {
                await report(.startupFailed("startup probe failed \(startup.failureThreshold ?? 3) times"))
                return
            }
        }
        await report(.started)
        if container.readinessProbe == nil { await report(.ready(true)) }
        await withTaskGroup(of: Void.self) { group in
            if let liveness = container.livenessProbe {
                group.addTask {
                    _ = await loop(liveness, kind: "Liveness", since: begin, stopOnSuccess: false) { result in
                        if case .failure(let message) = result { await report(.livenessFailed(message)) }
                    }
                }
            }
            if let readiness = container.readinessProbe {
                group.addTask {
                    _ = await loop(readiness, kind: "Readiness", since: begin, stopOnSuccess: false) { result in
                        if case .success = result { await report(.ready(true)) } else { await report(.ready(false)) }
                    }
                }
            }
        }
    }

    enum Outcome: Sendable {
        case success
        case failure(String)
    }

    /// Probes periodically; reports each threshold crossing. Returns true on success when `stopOnSuccess`,
    /// false when the failure threshold is hit in that mode, nil when cancelled.
    private func loop(_ probe: Probe, kind: String, since begin: ContinuousClock.Instant, stopOnSuccess: Bool,
                      report: @Sendable (Outcome) async -> Void) async -> Bool? {
        let period = Duration.seconds(max(Int(probe.periodSeconds ?? 10), 1))
        let timeout = Duration.seconds(max(Int(probe.timeoutSeconds ?? 1), 1))
        let failureThreshold = max(Int(probe.failureThreshold ?? 3), 1)
        let successThreshold = max(Int(probe.successThreshold ?? 1), 1)
        try? await Task.sleep(until: begin + .seconds(Int(probe.initialDelaySeconds ?? 0)))
        var failures = 0
        var successes = 0
        var passing: Bool? = nil
        while !Task.isCancelled {
            let result = await once(probe, timeout: timeout)
            switch result {
            case .success:
                successes += 1
                failures = 0
                if stopOnSuccess { return true }
                if successes >= successThreshold && passing != true {
                    passing = true
                    await report(.success)
                }
            case .failure(let message):
                failures += 1
                successes = 0
                if failures >= failureThreshold && passing != false {
                    if stopOnSuccess { return false }
                    passing = false
                    await report(.failure("\(kind) probe failed: \(message)"))
                    if kind == "Liveness" { return nil }
                }
            }
            try? await Task.sleep(for: period)
        }
        return nil
    }

    func once(_ probe: Probe, timeout: Duration) async -> Outcome {
        if let exec = probe.exec {
            guard let argv = exec.command, !argv.isEmpty else { return .failure("exec probe has no command") }
            do {
                let r = try await runtime.exec(id: containerID, argv: argv, timeout: timeout)
                return r.exitCode == 0 ? .success : .failure("command \(argv.joined(separator: " ")) exited with \(r.exitCode): \(r.output.suffix(200))")
            } catch {
                return .failure("\(error)")
            }
        }
        if let http = probe.httpGet {
            guard let port = resolvePort(http.port) else { return .failure("httpGet port \(http.port) is not a number") }
            guard hostNetwork || http.host != nil else {
                return .failure("httpGet probes reach pod-network pods once CNI networking lands; use hostNetwork or an exec probe")
            }
            return await ProbeSocket.httpGet(host: http.host ?? "127.0.0.1", port: port, path: http.path ?? "/",
                                             headers: (http.httpHeaders ?? []).map { ($0.name, $0.value) }, timeout: timeout)
        }
        if let tcp = probe.tcpSocket {
            guard let port = resolvePort(tcp.port) else { return .failure("tcpSocket port \(tcp.port) is not a number") }
            guard hostNetwork || tcp.host != nil else {
                return .failure("tcpSocket probes reach pod-network pods once CNI networking lands; use hostNetwork or an exec probe")
            }
            return await ProbeSocket.connect(host: tcp.host ?? "127.0.0.1", port: port, timeout: timeout)
        }
        return .failure("probe has no handler (exec, httpGet or tcpSocket)")
    }

    private func resolvePort(_ p: IntOrString) -> Int? {
        switch p {
        case .int(let i): return (1...65535).contains(i) ? i : nil
        case .string(let s): return Int(s)
        }
    }
}

/// Non-blocking IPv4 sockets for probes, polled cooperatively so a slow target never blocks a thread.
enum ProbeSocket {
    static func connect(host: String, port: Int, timeout: Duration) async -> Prober.Outcome {
        let deadline = ContinuousClock.now + timeout
        switch await open(host: host, port: port, deadline: deadline) {
        case .success(let fd):
            close(fd)
            return .success
        case .failure(let message):
            return .failure(message)
        }
    }

    static func httpGet(host: String, port: Int, path: String, headers: [(String, String)], timeout: Duration) async -> Prober.Outcome {
        let deadline = ContinuousClock.now + timeout
        let fd: Int32
        switch await open(host: host, port: port, deadline: deadline) {
        case .success(let f): fd = f
        case .failure(let message): return .failure(message)
        }
        defer { close(fd) }
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUser-Agent: kube-probe/edged\r\nAccept: */*\r\nConnection: close\r\n"
        for (k, v) in headers { request += "\(k): \(v)\r\n" }
        request += "\r\n"
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { sent += n; continue }
            if errno == EAGAIN, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)); continue }
            return .failure("sending the request to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        var response: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1024)
        while !response.contains(10) && response.count < 4096 {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { response += buf[0..<n]; continue }
            if n == 0 { break }
            if errno == EAGAIN, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)); continue }
            return .failure("HTTP probe to \(host):\(port)\(path) timed out")
        }
        let line = String(decoding: response.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
            return .failure("HTTP probe to \(host):\(port)\(path): malformed response \"\(line.prefix(80))\"")
        }
        return (200..<400).contains(code) ? .success : .failure("HTTP probe failed with statuscode: \(code)")
    }

    private enum OpenResult { case success(Int32), failure(String) }

    private static func open(host: String, port: Int, deadline: ContinuousClock.Instant) async -> OpenResult {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return .failure("probe host \(host) is not an IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure("socket: \(String(cString: strerror(errno)))") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc == 0 { return .success(fd) }
        guard errno == EINPROGRESS else {
            let e = String(cString: strerror(errno))
            close(fd)
            return .failure("dial tcp \(host):\(port): \(e)")
        }
        while ContinuousClock.now < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            if poll(&p, 1, 0) > 0 {
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                if err == 0 { return .success(fd) }
                close(fd)
                return .failure("dial tcp \(host):\(port): \(String(cString: strerror(err)))")
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        close(fd)
        return .failure("dial tcp \(host):\(port): i/o timeout")
    }
}
