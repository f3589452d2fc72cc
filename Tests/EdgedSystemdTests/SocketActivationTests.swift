// edged.socket: systemd binds the control socket and passes it to edged (LISTEN_FDS); edged serves it as it is and
// leaves it open and in place when it exits, so edgectl's connections wait through a restart.
//
// These tests do what systemd does: bind and listen on the socket, then start the real edged with the socket as fd
// 3 and LISTEN_FDS=1, LISTEN_FDNAMES=control, and LISTEN_PID set to edged's pid (a shell sets it to its own pid
// and execs edged, keeping the pid).

import EdgedTestSupport
import Foundation
import Testing

/// A listening Unix stream socket at `path`, 0600, as edged.socket's ListenStream= + SocketMode=0600 make it.
private func listeningSocket(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0, chmod(path, 0o600) == 0, listen(fd, 64) == 0 else {
        throw TestFailure("socket \(path): \(String(cString: strerror(errno)))")
    }
    return fd
}

/// Starts edged with `socketFD` as fd 3 and the LISTEN_* variables (`listenPID` nil: edged's own pid, as systemd
/// sets it). Returns its pid; its output goes to `edged.logFile`.
private func spawnEdged(_ edged: EdgedInstance, socketFD: Int32, listenPID: String? = nil) throws -> pid_t {
    if !FileManager.default.fileExists(atPath: edged.root.sub("config.yaml")) {
        try "cni:\n  confDir: \(edged.root.sub("cni/net.d"))\n".write(toFile: edged.root.sub("config.yaml"), atomically: true, encoding: .utf8)
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, edged.logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    posix_spawn_file_actions_adddup2(&actions, socketFD, 3)
    let script = listenPID.map { "LISTEN_PID=\($0) exec \"$0\" \"$@\"" } ?? "LISTEN_PID=$$ exec \"$0\" \"$@\""
    let args = ["/bin/sh", "-c", "export LISTEN_PID; " + script, "\(buildBinDir)/edged", "run"] + edged.arguments
    let env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LISTEN_FDS=1", "LISTEN_FDNAMES=control"]
    let cArgs = args.map { strdup($0) } + [nil]
    let cEnv = env.map { strdup($0) } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw TestFailure("spawning edged: \(String(cString: strerror(rc)))") }
    return pid
}

private func stopEdged(_ pid: pid_t) -> Int32 {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

/// Polls `edgectl status --json` on `socket` until it answers (exit 0 or 1).
private func waitForAnswer(_ edged: EdgedInstance, socket: String, pid: pid_t, timeout: Duration = .seconds(30)) throws -> CommandResult {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { throw TestFailure("edged exited (status \(status)):\n\(edged.log())") }
        let r = try runCommand(["\(buildBinDir)/edgectl", "status", "--json", "--socket", socket], check: false)
        if r.status == 0 || r.status == 1 { return r }
        Thread.sleep(forTimeInterval: 0.05)
    }
    throw TestFailure("edged did not answer on \(socket):\n\(edged.log())")
}

private func inode(_ path: String) -> UInt64? {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
}

@Suite(.serialized, .enabled(if: isRoot, "needs root: edged runs as root"))
struct SocketActivationTests {
    @Test func edgedServesThePassedSocketAndLeavesItAcrossARestart() throws {
        let edged = try EdgedInstance(name: "sockact")
        defer { edged.cleanUp() }
        let path = edged.socket
        let fd = try listeningSocket(path)
        defer { close(fd) }
        let before = inode(path)

        let first = try spawnEdged(edged, socketFD: fd)
        let answer = try waitForAnswer(edged, socket: path, pid: first)
        #expect(answer.stdout.contains("\"pid\" : \(first)"), "edged (pid \(first)) answers: \(answer.stdout.prefix(300))")
        #expect(edged.log().contains("control socket \(path) from systemd (edged.socket, fd 3)"), "\(edged.log())")
        #expect(inode(path) == before, "edged served the passed socket and did not bind its own")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600, "the socket unit's mode stays")

        #expect(stopEdged(first) == 0)
        // edged is gone, the socket stays: systemd's copy still listens, so a client's connect is queued, not refused.
        #expect(inode(path) == before, "edged left the socket file in place")
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(connected == 0, "connect while edged is down: \(String(cString: strerror(errno)))")
        // The waiting client is answered by the next edged, which gets the same socket.
        let request = "GET /v1/status HTTP/1.1\r\nHost: edged\r\nConnection: close\r\n\r\n"
        #expect(write(client, request, request.utf8.count) == request.utf8.count)

        let second = try spawnEdged(edged, socketFD: fd)
        defer { _ = stopEdged(second) }
        var reply = [UInt8](repeating: 0, count: 64)
        var pfd = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 30_000) == 1, "the queued connection got an answer from the restarted edged")
        let n = read(client, &reply, reply.count)
        #expect(String(decoding: reply[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 "))
        let again = try waitForAnswer(edged, socket: path, pid: second)
        #expect(again.stdout.contains("\"pid\" : \(second)"))
        #expect(inode(path) == before)
    }

    /// LISTEN_PID names another process (the variables leaked to a child): edged ignores them and binds its own socket.
    @Test func socketsForAnotherPidAreNotTaken() throws {
        let edged = try EdgedInstance(name: "sockother")
        defer { edged.cleanUp() }
        let other = edged.root.sub("other.sock")
        let fd = try listeningSocket(other)
        defer { close(fd) }
        let pid = try spawnEdged(edged, socketFD: fd, listenPID: "1")
        defer { _ = stopEdged(pid) }
        _ = try waitForAnswer(edged, socket: edged.socket, pid: pid)
        #expect(!edged.log().contains("from systemd"))
        #expect(inode(edged.socket) != inode(other))
    }
}
