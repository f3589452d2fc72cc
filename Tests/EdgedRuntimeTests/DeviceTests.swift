// Host device nodes in containers (ContainerSpec.devices): bound onto the container's fresh /dev by edged-monitor.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

@Suite(.enabled(if: isRoot, "needs root"))
struct DeviceTests {
    /// A character device with /dev/zero's numbers (1:5), so reading it works anywhere.
    private func makeNode(_ path: String) throws {
        try runTool(["mknod", "-m", "666", path, "c", "1", "5"])
    }

    @Test func deviceNodesAppearInDevAndAreReadable() async throws {
        try await withRuntime { f in
            try makeNode(f.tmp.sub("gpu0"))
            try makeNode(f.tmp.sub("ctl"))
            let spec = f.spec("dev", ["sh", "-c", "ls /dev | grep -E 'fake' | sort | tr '\\n' ' '; echo; head -c 3 /dev/fake0 | wc -c; test -c /dev/fake/ctl && echo chr"]) {
                $0.devices = [DeviceSpec(source: f.tmp.sub("gpu0"), destination: "/dev/fake0"),
                              DeviceSpec(source: f.tmp.sub("ctl"), destination: "/dev/fake/ctl")]
            }
            let (info, recs) = try await f.run(spec)
            #expect(exitCode(info) == 0, "\(recs)")
            #expect(recs.map(\.1) == ["fake fake0 ", "3", "chr"])
        }
    }

    @Test func containersWithoutDevicesSeeNone() async throws {
        try await withRuntime { f in
            let (info, recs) = try await f.run(f.spec("nodev", ["sh", "-c", "ls /dev | tr '\\n' ' '"]))
            #expect(exitCode(info) == 0)
            #expect(recs.map(\.1) == ["core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero "])
        }
    }

    @Test func badDevicesFailTheStartClearly() async throws {
        try await withRuntime { f in
            try "not a device".write(toFile: f.tmp.sub("file"), atomically: true, encoding: .utf8)
            try makeNode(f.tmp.sub("node"))
            let cases: [(String, DeviceSpec, String)] = [
                ("regular", DeviceSpec(source: f.tmp.sub("file"), destination: "/dev/x"), "device \(f.tmp.sub("file")) is not a character device"),
                ("missing", DeviceSpec(source: f.tmp.sub("none"), destination: "/dev/x"), "device \(f.tmp.sub("none")): No such file or directory"),
                ("outside", DeviceSpec(source: f.tmp.sub("node"), destination: "/etc/x"), "device path /etc/x must be below /dev"),
                ("escape", DeviceSpec(source: f.tmp.sub("node"), destination: "/dev/../etc/x"), "device path /dev/../etc/x must be below /dev"),
            ]
            let sb = try await f.sandbox()
            for (name, device, message) in cases {
                do {
                    _ = try await f.runtime.start(f.spec(name, ["true"]) { $0.devices = [device] }, sandbox: sb)
                    Issue.record("\(name): expected a start failure")
                } catch let e as RuntimeError {
                    #expect(e.code == .startFailed, "\(name): \(e.message)")
                    #expect(e.message.contains(message), "\(name): \(e.message)")
                }
                let info = try #require(await f.runtime.inspect(id: f.spec(name, []).id))
                #expect(info.status.reason == "StartError")
            }
        }
    }
}
