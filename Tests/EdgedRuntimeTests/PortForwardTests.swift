// Connections opened inside a pod's network namespace (port-forward): a busybox echo server in the pod answers on
// the pod's 127.0.0.1, while the host's 127.0.0.1 on the same port is a different listener.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

/// A listener on the host's 127.0.0.1 (ephemeral port) that greets every connection with "host\n".
final class HostGreeter: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw TestFailure("bind/listen: \(String(cString: strerror(errno)))") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        port = UInt16(bigEndian: addr.sin_port)
        let listener = fd
        DispatchQueue.global().async {
            while true {
                let c = accept(listener, nil, nil)
                if c < 0 { return }
                writeAll(c, "host\n")
                close(c)
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// Reads one line (without the "\n") from a blocking socket, giving up after 5 s.
func readLine(_ fd: Int32) -> String {
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var out: [UInt8] = []
    var b: UInt8 = 0
    while read(fd, &b, 1) == 1 {
        if b == UInt8(ascii: "\n") { break }
        out.append(b)
    }
    return String(decoding: out, as: UTF8.self)
}

@Suite(.enabled(if: isRoot, "needs root"))
struct PortForwardTests {
    /// Connects in the pod's namespace, retrying while the server in the pod starts.
    private func connect(_ netns: String?, _ port: UInt16) async throws -> Int32 {
        var last: Error?
        for _ in 0..<50 {
            do { return try await NetworkNamespace.connectTCP(netnsPath: netns, host: "127.0.0.1", port: port) } catch {
                last = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw last!
    }

    @Test func echoInsideThePodNamespaceIsNotTheHostsPort() async throws {
        let host = try HostGreeter()
        defer { host.stop() }
        try await withRuntime { f in
            let sb = try await f.sandbox()
            let netns = try #require(sb.netns)
            let spec = f.spec("echo", ["nc", "-ll", "-p", String(host.port), "-e", "cat"])
            _ = try await f.runtime.start(spec, sandbox: sb)
            let fd = try await connect(netns, host.port)
            defer { close(fd) }
            writeAll(fd, "ping through the pod\n")
            #expect(readLine(fd) == "ping through the pod")
            writeAll(fd, "second\n")
            #expect(readLine(fd) == "second")

            // The same port on the host's loopback is the host's listener.
            let hostFD = try await NetworkNamespace.connectTCP(netnsPath: nil, host: "127.0.0.1", port: host.port)
            #expect(readLine(hostFD) == "host")
            close(hostFD)

            // The test's own threads stayed in the host namespace.
            let mine = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
            let process = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
            #expect(mine == process)
        }
    }

    @Test func pidNamespacePathWorksToo() async throws {
        try await withRuntime { f in
            let sb = try await f.sandbox()
            let spec = f.spec("echo", ["nc", "-ll", "-p", "8080", "-e", "cat"])
            let info = try await f.runtime.start(spec, sandbox: sb)
            guard case let .running(pid, _) = info.status else { Issue.record("not running"); return }
            let fd = try await connect(NetworkNamespace.path(ofPid: pid), 8080)
            defer { close(fd) }
            writeAll(fd, "via pid\n")
            #expect(readLine(fd) == "via pid")
        }
    }

    @Test func closedPortAndMissingNamespaceFailClearly() async throws {
        try await withRuntime { f in
            let sb = try await f.sandbox()
            let netns = try #require(sb.netns)
            let refused = await #expect(throws: RuntimeError.self) {
                try await NetworkNamespace.connectTCP(netnsPath: netns, host: "127.0.0.1", port: 9)
            }
            #expect(refused?.message.contains("127.0.0.1:9") == true)
            #expect(refused?.message.contains(netns) == true)
            #expect(refused?.message.contains("refused") == true)
            let missing = await #expect(throws: RuntimeError.self) {
                try await NetworkNamespace.connectTCP(netnsPath: f.tmp.sub("no-netns"), host: "127.0.0.1", port: 80)
            }
            #expect(missing?.message.contains("no-netns") == true)
            await #expect(throws: RuntimeError.self) {
                try await NetworkNamespace.connectTCP(netnsPath: nil, host: "not-an-ip", port: 80)
            }
        }
    }

    @Test func hostNetworkPodUsesTheHostsLoopback() async throws {
        let host = try HostGreeter()
        defer { host.stop() }
        try await withRuntime { f in
            let sb = try await f.sandbox(hostNetwork: true)
            #expect(sb.netns == nil)
            let fd = try await NetworkNamespace.connectTCP(netnsPath: sb.netns, host: "127.0.0.1", port: host.port)
            #expect(readLine(fd) == "host")
            close(fd)
        }
    }
}
