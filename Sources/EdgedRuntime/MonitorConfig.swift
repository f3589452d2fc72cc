// The config file edged-monitor reads: NUL-terminated "key=value" records (repeated keys form lists),
// trivial to parse in C. See Sources/edged-monitor/config.c for the reader.

struct MonitorConfig {
    private(set) var bytes: [UInt8] = []

    mutating func add(_ key: String, _ value: String) {
        bytes.append(contentsOf: Array(key.utf8))
        bytes.append(UInt8(ascii: "="))
        // A NUL inside a value would split the record; argv/env cannot hold one anyway.
        bytes.append(contentsOf: value.utf8.filter { $0 != 0 })
        bytes.append(0)
    }

    mutating func add(_ key: String, _ value: Bool) { add(key, value ? "1" : "0") }

    /// Builds the record list for a container.
    static func make(spec: ContainerSpec, user: ResolvedUser, caps: UInt64, dir: String, sandbox: Sandbox,
                     cgroupDirs: [String]) -> MonitorConfig {
        var c = MonitorConfig()
        c.add("id", spec.displayName)
        c.add("rootfs", "\(dir)/rootfs")
        // overlayfs wants the topmost layer first.
        c.add("lowerdir", spec.layers.reversed().joined(separator: ":"))
        c.add("upperdir", "\(dir)/upper")
        c.add("workdir", "\(dir)/work")
        for a in spec.argv { c.add("arg", a) }
        for e in environment(spec: spec, user: user) { c.add("env", e) }
        c.add("cwd", spec.workingDir.isEmpty ? "/" : spec.workingDir)
        c.add("uid", String(user.uid))
        c.add("gid", String(user.gid))
        for g in user.groups { c.add("group", String(g)) }
        c.add("caps", String(caps, radix: 16))
        c.add("privileged", spec.privileged)
        c.add("readonly", spec.readOnlyRootfs)
        c.add("nnp", spec.noNewPrivileges)
        c.add("seccomp", spec.seccomp == .runtimeDefault && !spec.privileged)
        if let n = sandbox.netns { c.add("netns", n) }
        c.add("ipcns", sandbox.ipcns)
        c.add("utsns", sandbox.utsns)
        for m in spec.mounts {
            c.add("mount_src", m.source)
            c.add("mount_dst", m.destination)
            c.add("mount_ro", m.readOnly)
        }
        for d in spec.devices {
            c.add("dev_src", d.source)
            c.add("dev_dst", d.destination)
        }
        for d in cgroupDirs { c.add("cgroup", d) }
        c.add("log", spec.logPath)
        c.add("logmax", String(spec.logMaxBytes))
        c.add("logfiles", String(spec.logMaxFiles))
        return c
    }

    /// The spec's env plus what runtimes add when missing: PATH, HOSTNAME, HOME.
    static func environment(spec: ContainerSpec, user: ResolvedUser) -> [String] {
        var env = spec.env
        let keys = Set(env.map { $0.split(separator: "=", maxSplits: 1).first.map(String.init) ?? $0 })
        if !keys.contains("PATH") { env.insert("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", at: 0) }
        if !keys.contains("HOSTNAME"), !spec.hostname.isEmpty { env.append("HOSTNAME=\(spec.hostname)") }
        if !keys.contains("HOME") { env.append("HOME=\(user.home)") }
        return env
    }
}
