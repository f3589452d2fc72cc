// What a spawned child (a monitor, a CNI plugin, a host tool) inherits of edged's descriptors: 0-2 and nothing
// else. SwiftNIO's sockets are not close-on-exec, so without posix_spawn's closefrom every monitor would keep
// edged's listening sockets open, and their ports bound after edged restarts (the static binaries did, while the
// closefrom call was looked up with dlsym, which finds nothing in a static executable).

@testable import EdgedRuntime
import Foundation
import Testing

@Suite struct SpawnDescriptorTests {
    /// A listening TCP socket and a pipe, neither close-on-exec, like SwiftNIO's descriptors.
    private func leakableDescriptors() throws -> (socket: Int32, pipe: [Int32]) {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(s >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(s, 1) == 0)
        var p: [Int32] = [-1, -1]
        try #require(pipe(&p) == 0)
        for fd in [s] + p { try #require(fcntl(fd, F_GETFD) & FD_CLOEXEC == 0) }
        return (s, p)
    }

    /// "fd target" for every open descriptor of a shell spawned the way edged spawns its monitors.
    private func childDescriptors() async throws -> [(fd: Int, target: String)] {
        // No command substitution: its pipe would show in the listing.
        let script = #"for f in /proc/$$/fd/*; do printf '%s ' "${f##*/}"; readlink "$f" || echo; done; true"#
        let r = try await HostCommand.run("/bin/sh", ["-c", script])
        #expect(r.status == 0, "the listing shell failed: \(r.output)")
        return r.output.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let fd = Int(parts[0]) else { return nil }
            return (fd, String(parts[1]))
        }
    }

    @Test func aSpawnedChildGetsOnlyStandardDescriptors() async throws {
        let (s, p) = try leakableDescriptors()
        defer { for fd in [s] + p { close(fd) } }
        let listing = try await childDescriptors()
        // The glob's directory handle is closed before the loop runs: only 0-2 resolve.
        #expect(listing.contains { $0.fd == 1 }, "expected the child's stdout in its listing, saw \(listing)")
        let extra = listing.filter { $0.fd > 2 }
        #expect(extra.isEmpty, "expected the spawned child to hold only descriptors 0-2, saw also \(extra)")
        #expect(!listing.contains { $0.target.hasPrefix("socket:") },
                "expected no socket in the spawned child (edged's listeners would stay bound), saw \(listing)")
    }
}
