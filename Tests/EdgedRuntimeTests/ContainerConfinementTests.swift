// What a non-privileged container cannot do, shown with real containers: the syscalls RuntimeDefault blocks (by
// errno, through the host's perl `syscall`), its capability sets, its view of /proc, /sys and /dev, other pods' files
// and host paths it did not ask for.

import EdgedCore
import EdgedTestSupport
@testable import EdgedRuntime
import Foundation
import Testing

/// The host's /usr (and /lib, /lib64) mounted read-only into the busybox rootfs, so the container can run /usr/bin/perl.
private func hostPerlMounts(_ f: RuntimeFixture) throws -> [MountSpec] {
    var mounts: [MountSpec] = []
    for dir in ["usr", "lib", "lib64"] {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/\(dir)") {
            try FileManager.default.createSymbolicLink(atPath: "\(f.rootfs)/\(dir)", withDestinationPath: target)
        } else if FileManager.default.fileExists(atPath: "/\(dir)") {
            try FileManager.default.createDirectory(atPath: "\(f.rootfs)/\(dir)", withIntermediateDirectories: true)
            mounts.append(MountSpec(source: "/\(dir)", destination: "/\(dir)", readOnly: true))
        }
    }
    return mounts
}

/// Syscall numbers of this architecture: keyctl, unshare, mount.
#if arch(x86_64)
private let syscallNumbers = (keyctl: 250, unshare: 272, mount: 165)
#elseif arch(arm64)
private let syscallNumbers = (keyctl: 219, unshare: 97, mount: 40)
#endif

/// Prints "NAME RESULT ERRNO" for keyctl(KEYCTL_GET_KEYRING_ID, session), unshare(CLONE_NEWUSER) and mount of a tmpfs.
private let syscallProbe = """
    $r = syscall(\(syscallNumbers.keyctl), 0, -3, 0); print "keyctl $r ", $!+0, "\\n";
    $r = syscall(\(syscallNumbers.unshare), 0x10000000); print "unshare $r ", $!+0, "\\n";
    my ($src, $dst, $type) = ("none", "/mnt", "tmpfs");
    $r = syscall(\(syscallNumbers.mount), $src, $dst, $type, 0, 0); print "mount $r ", $!+0, "\\n";
    """

@Suite(.enabled(if: isRoot, "needs root"))
struct ContainerConfinementTests {
    /// The errno of each probed syscall, by name ("0" when it succeeded).
    private func probe(_ f: RuntimeFixture, _ name: String, _ seccomp: SeccompMode, mounts: [MountSpec]) async throws -> [String: String] {
        let (info, recs) = try await f.run(f.spec(name, ["/usr/bin/perl", "-e", syscallProbe]) {
            $0.mounts = mounts
            $0.seccomp = seccomp
        })
        #expect(exitCode(info) == 0, "\(f.output(recs))")
        var result: [String: String] = [:]
        for (_, line) in recs {
            let parts = line.split(separator: " ").map(String.init)
            guard parts.count == 3 else { continue }
            result[parts[0]] = parts[1] == "-1" ? parts[2] : "0"
        }
        return result
    }

    /// RuntimeDefault answers EPERM (1) to keyctl, unshare of a user namespace and mount; Unconfined lets the first
    /// two through (mount still needs CAP_SYS_ADMIN, which the default set lacks), so it is the profile that blocks.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"), "needs the host's perl"))
    func seccompRuntimeDefaultAnswersEPERM() async throws {
        try await withRuntime { f in
            let mounts = try hostPerlMounts(f)
            try FileManager.default.createDirectory(atPath: "\(f.rootfs)/mnt", withIntermediateDirectories: true)
            let blocked = try await probe(f, "sc-default", .runtimeDefault, mounts: mounts)
            #expect(blocked == ["keyctl": "1", "unshare": "1", "mount": "1"], "\(blocked)")
            let open = try await probe(f, "sc-unconfined", .unconfined, mounts: mounts)
            #expect(open == ["keyctl": "0", "unshare": "0", "mount": "1"], "\(open)")
        }
    }
}
