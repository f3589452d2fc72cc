// Capability name resolution and user resolution from an image's passwd/group files.

import EdgedTestSupport
@testable import EdgedRuntime
import Testing

struct CapabilitiesTests {
    @Test func defaultAddDrop() throws {
        #expect(Capabilities.defaultMask == 0xa804_25fb)
        #expect(try Capabilities.resolve(add: [], drop: ["ALL"], privileged: false) == 0)
        #expect(try Capabilities.resolve(add: ["NET_ADMIN"], drop: ["ALL"], privileged: false) == 1 << 12)
        #expect(try Capabilities.resolve(add: ["cap_sys_admin"], drop: ["KILL"], privileged: false) == (0xa804_25fb | 1 << 21) & ~(1 << 5))
        #expect(try Capabilities.resolve(add: [], drop: ["ALL"], privileged: true) == Capabilities.all)
        #expect(throws: RuntimeError.self) { try Capabilities.resolve(add: ["NOPE"], drop: [], privileged: false) }
    }
}

struct UserResolverTests {
    private func spec(_ layers: [String], user: String?, runAsUser: Int64? = nil) -> ContainerSpec {
        ContainerSpec(id: "c", podUID: "u", podName: "p", containerName: "c", layers: layers, argv: ["true"], user: user,
                      runAsUser: runAsUser, supplementalGroups: [3000], logPath: "/dev/null")
    }

    @Test func resolvesNamesNumbersAndGroups() throws {
        let tmp = try TempDir("users")
        defer { tmp.remove() }
        try makeBusyboxRootfs(at: tmp.path)
        let layers = [tmp.path]
        #expect(try UserResolver.resolve(spec: spec(layers, user: nil)) == ResolvedUser(uid: 0, gid: 0, groups: [3000], home: "/root"))
        #expect(try UserResolver.resolve(spec: spec(layers, user: "app")) == ResolvedUser(uid: 1000, gid: 1000, groups: [2000, 3000], home: "/home/app"))
        #expect(try UserResolver.resolve(spec: spec(layers, user: "app:extra")).gid == 2000)
        #expect(try UserResolver.resolve(spec: spec(layers, user: "42:43")) == ResolvedUser(uid: 42, gid: 43, groups: [3000], home: "/"))
        #expect(try UserResolver.resolve(spec: spec(layers, user: "app", runAsUser: 65534)).gid == 65534)
        #expect(throws: RuntimeError.self) { try UserResolver.resolve(spec: spec(layers, user: "ghost")) }
        #expect(throws: RuntimeError.self) { try UserResolver.resolve(spec: spec(layers, user: "app:nogrp")) }
    }
}
