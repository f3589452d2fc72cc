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

extension ContainerConfinementTests {
    /// Root keeps the default set (bounding = permitted = effective, nothing inheritable or ambient); a non-root user
    /// keeps the bounding set only, its permitted and effective sets are empty after exec.
    @Test func capabilitySetsForRootAndForAUser() async throws {
        try await withRuntime { f in
            let argv = ["sh", "-c", "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"]
            let (i1, root) = try await f.run(f.spec("caproot", argv))
            #expect(exitCode(i1) == 0)
            #expect(root.map(\.1) == ["CapInh:\t0000000000000000", "CapPrm:\t00000000a80425fb", "CapEff:\t00000000a80425fb",
                                      "CapBnd:\t00000000a80425fb", "CapAmb:\t0000000000000000"])
            let (i2, user) = try await f.run(f.spec("capuser", argv) { $0.user = "app" })
            #expect(exitCode(i2) == 0)
            #expect(user.map(\.1) == ["CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
                                      "CapBnd:\t00000000a80425fb", "CapAmb:\t0000000000000000"])
        }
    }

    /// /proc shows only the container's own processes; runc's masked paths read empty, /proc/sys, /proc/sysrq-trigger
    /// and /sys are read-only (a sysctl written with its own value still fails); /dev has no block device.
    @Test func procSysAndDevShowNothingOfTheHost() async throws {
        try await withRuntime { f in
            let script = """
                echo pids $(ls /proc | grep -c '^[0-9][0-9]*$')
                for m in /proc/kcore /proc/keys; do [ -e $m ] && echo $m $(wc -c < $m) || echo $m absent; done
                v=$(cat /proc/sys/vm/overcommit_memory); (echo $v > /proc/sys/vm/overcommit_memory) 2>/dev/null && echo sysctl written || echo sysctl refused
                for m in /proc/sys /proc/sysrq-trigger /sys; do
                    [ -e $m ] || { echo $m absent; continue; }
                    grep " $m " /proc/self/mounts | grep -q ' ro,' && echo $m ro || echo $m rw
                done
                echo blockdevs $(ls -l /dev | grep -c '^b')
                """
            let (info, recs) = try await f.run(f.spec("procview", ["sh", "-c", script]))
            #expect(exitCode(info) == 0, "\(f.output(recs))")
            let lines = recs.map(\.1)
            let hostPIDs = try FileManager.default.contentsOfDirectory(atPath: "/proc").filter { Int($0) != nil }.count
            let pids = lines.first { $0.hasPrefix("pids ") }.flatMap { Int($0.dropFirst(5)) } ?? .max
            #expect(pids <= 4 && pids < hostPIDs, "the container saw \(pids) processes, the host has \(hostPIDs)")
            // This kernel's /proc may lack some of them (no CONFIG_MAGIC_SYSRQ, no /proc/kcore): absent inside too.
            func onHost(_ path: String, _ expected: String) -> String {
                "\(path) \(FileManager.default.fileExists(atPath: path) ? expected : "absent")"
            }
            #expect(Array(lines.dropFirst()) == [onHost("/proc/kcore", "0"), onHost("/proc/keys", "0"), "sysctl refused",
                                                 "/proc/sys ro", onHost("/proc/sysrq-trigger", "ro"), "/sys ro", "blockdevs 0"],
                    "\(lines)")
        }
    }
}

extension ContainerConfinementTests {
    /// A container that makes a node for a host block device (CAP_MKNOD is in the default set) must not be able to
    /// read it (under runc, its device cgroup allow-list refuses the open). The device here is a loop device over a
    /// file with a token. edged installs no device cgroup or BPF filter; instead the root file system, /dev's tmpfs
    /// and volumes are mounted nodev for non-privileged containers, so the open fails with EACCES.
    @Test(.enabled(if: findExecutable("losetup") != nil && FileManager.default.fileExists(atPath: "/dev/loop-control"), "needs losetup and loop devices"))
    func hostBlockDeviceCannotBeReadThroughMknod() async throws {
        try await withRuntime { f in
            let token = "edged-disk-\(UInt64.random(in: 0...UInt64.max))"
            let image = f.tmp.sub("disk.img")
            var data = Data(token.utf8)
            data.append(Data(count: 65536 - data.count))
            try data.write(to: URL(fileURLWithPath: image))
            let loop = try runTool(["losetup", "-f", "--show", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            defer { _ = try? runTool(["losetup", "-d", loop]) }
            var st = stat()
            #expect(stat(loop, &st) == 0)
            let (major, minor) = (st.st_rdev >> 8 & 0xfff, st.st_rdev & 0xff | st.st_rdev >> 12 & 0xfff00)
            // A node made on the root file system and one on /dev's tmpfs: both exist, neither opens.
            let script = "for d in /tmp /dev; do busybox mknod $d/disk b \(major) \(minor) && echo made $d; head -c \(token.utf8.count) $d/disk; echo; done"
            let (_, recs) = try await f.run(f.spec("mknod", ["sh", "-c", script]))
            let out = f.output(recs)
            #expect(out.contains("made /tmp") && out.contains("made /dev"), "mknod itself should work (CAP_MKNOD): \(out)")
            #expect(!out.contains(token), "a container read \(loop) (\(major):\(minor)) through mknod: \(out)")
            #expect(out.contains("Permission denied"), "\(out)")
        }
    }
}

extension ContainerConfinementTests {
    /// Two pods on one runtime: pod B keeps a token in its rootfs, its /dev/shm and a volume. Pod A, with a volume of
    /// its own, finds the token nowhere in its filesystem, sees no process of B, and no host path it did not ask for
    /// (not B's volume, not the directory that holds both volumes); its own volume is where it asked.
    @Test func otherPodsAndUnaskedHostPathsAreInvisible() async throws {
        try await withRuntime { f in
            let token = "edged-pod-b-\(UInt64.random(in: 0...UInt64.max))"
            let (volA, volB) = (f.tmp.sub("volumes/a"), f.tmp.sub("volumes/b"))
            for dir in [volA, volB] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
            try "mine\n".write(toFile: "\(volA)/file", atomically: true, encoding: .utf8)
            let otherUID = "other-\(f.podUID)"
            let other = try await f.runtime.createSandbox(podUID: otherUID, hostname: "b", hostNetwork: false)
            let specB = f.spec("podb", ["sh", "-c", "echo $T > /tmp/t; echo $T > /dev/shm/t; echo $T > /vol/t; echo ready; exec sleep 60"]) {
                $0.id = "podb-\(otherUID)"
                $0.podUID = otherUID
                $0.env = ["T=\(token)"]
                $0.mounts = [MountSpec(source: volB, destination: "/vol")]
            }
            do {
                _ = try await f.runtime.start(specB, sandbox: other)
                for _ in 0..<100 where !FileManager.default.fileExists(atPath: "\(volB)/t") { try await Task.sleep(for: .milliseconds(20)) }
                // /tmp/own: the search does find the token where it is.
                let script = """
                    echo $T > /tmp/own
                    for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rlsF "$T" $d ;; esac; done
                    grep -rlsF "$T" /dev/shm
                    grep -l sleep /proc/[0-9]*/comm
                    for p in \(volB) \(f.tmp.sub("volumes")) \(f.tmp.path); do [ -e $p ] && echo visible $p; done
                    cat /data/file
                    """
                let (info, recs) = try await f.run(f.spec("poda", ["sh", "-c", script]) {
                    $0.env = ["T=\(token)"]
                    $0.mounts = [MountSpec(source: volA, destination: "/data")]
                })
                #expect(exitCode(info) == 0, "\(f.output(recs))")
                #expect(recs.map(\.1) == ["/tmp/own", "mine"], "pod A saw: \(f.output(recs))")
                #expect(try String(contentsOfFile: "\(volB)/t", encoding: .utf8) == token + "\n", "pod B did write its token")
            } catch {
                await removePod(f, otherUID)
                throw error
            }
            await removePod(f, otherUID)
        }
    }

    /// Stops and removes a second pod's containers, sandbox and cgroups (the fixture cleans only its own pod).
    private func removePod(_ f: RuntimeFixture, _ uid: String) async {
        for c in await f.runtime.list() where c.spec.podUID == uid {
            _ = try? await f.runtime.stop(id: c.spec.id, grace: .milliseconds(100))
            try? await f.runtime.remove(id: c.spec.id)
        }
        try? await f.runtime.removeSandbox(podUID: uid)
        for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
                     "/sys/fs/cgroup/cpuacct", f.config.cgroupFSRoot] {
            rmdir("\(base)/\(f.prefix)/pod\(uid)")
        }
    }
}
