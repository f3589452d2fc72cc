// Linux capabilities by Kubernetes name, the container default set, and add/drop resolution.

/// Capability sets as a bit mask (bit n = capability number n).
public enum Capabilities {
    /// Kernel capability names in number order (CAP_CHOWN = 0 ...).
    public static let names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ]

    /// The default set of containerd/CRI (and Docker): 0xa80425fb.
    public static let defaultNames = [
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
        "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    ]

    public static var all: UInt64 { (UInt64(1) << UInt64(names.count)) - 1 }

    public static var defaultMask: UInt64 { defaultNames.reduce(0) { $0 | (try! bit($1)) } }

    /// The bit of a capability name ("NET_ADMIN" or "CAP_NET_ADMIN", any case).
    public static func bit(_ name: String) throws -> UInt64 {
        var n = name.uppercased()
        if n.hasPrefix("CAP_") { n.removeFirst(4) }
        guard let i = names.firstIndex(of: n) else {
            throw RuntimeError(.invalidSpec, "unknown capability \(name)")
        }
        return UInt64(1) << UInt64(i)
    }

    /// Kubernetes semantics: start from the default set (or nothing when drop has ALL), remove drops, add adds
    /// (ALL adds everything). Privileged containers get every capability.
    public static func resolve(add: [String], drop: [String], privileged: Bool) throws -> UInt64 {
        if privileged { return all }
        let isAll = { (s: String) in s.uppercased() == "ALL" || s.uppercased() == "CAP_ALL" }
        var mask = drop.contains(where: isAll) ? 0 : defaultMask
        for d in drop where !isAll(d) { mask &= ~(try bit(d)) }
        for a in add { mask |= isAll(a) ? all : try bit(a) }
        return mask
    }
}
