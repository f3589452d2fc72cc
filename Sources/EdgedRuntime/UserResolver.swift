// Resolves the container user like runc/containerd: the image's User ("name", "uid", "name:group", "uid:gid"),
// looked up in the image's /etc/passwd and /etc/group, then securityContext runAsUser/runAsGroup on top.

/// The numeric identity a container runs with.
public struct ResolvedUser: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    /// Groups the user is listed in (/etc/group) plus the pod's supplementalGroups.
    public var groups: [UInt32]
    /// The home directory from /etc/passwd, "/" when unknown.
    public var home: String
}

struct PasswdEntry {
    var name: String
    var uid: UInt32
    var gid: UInt32
    var home: String
}

struct GroupEntry {
    var name: String
    var gid: UInt32
    var members: [String]
}

enum UserResolver {
    /// `layers` lowest first; the topmost layer holding a file wins (whiteouts are not considered).
    static func resolve(spec: ContainerSpec) throws -> ResolvedUser {
        let passwd = parsePasswd(findFile("etc/passwd", layers: spec.layers) ?? "")
        let groups = parseGroup(findFile("etc/group", layers: spec.layers) ?? "")
        var uid: UInt32 = 0
        var gid: UInt32?
        var userEntry: PasswdEntry?
        if let user = spec.user, !user.isEmpty {
            let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
            let u = parts[0]
            if let n = UInt32(u) {
                uid = n
                userEntry = passwd.first { $0.uid == n }
            } else {
                guard let e = passwd.first(where: { $0.name == u }) else {
                    throw RuntimeError(.invalidSpec,
                                       "\(spec.displayName): unable to find user \(u): no matching entries in passwd file")
                }
                userEntry = e
                uid = e.uid
            }
            if parts.count == 2 {
                let g = parts[1]
                if let n = UInt32(g) {
                    gid = n
                } else {
                    guard let e = groups.first(where: { $0.name == g }) else {
                        throw RuntimeError(.invalidSpec,
                                           "\(spec.displayName): unable to find group \(g): no matching entries in group file")
                    }
                    gid = e.gid
                }
            }
        }
        if let r = spec.runAsUser {
            guard let n = UInt32(exactly: r) else { throw RuntimeError(.invalidSpec, "\(spec.displayName): bad runAsUser \(r)") }
            if n != uid { gid = nil }
            uid = n
            userEntry = passwd.first { $0.uid == n }
        }
        if let g = spec.runAsGroup {
            guard let n = UInt32(exactly: g) else { throw RuntimeError(.invalidSpec, "\(spec.displayName): bad runAsGroup \(g)") }
            gid = n
        }
        if userEntry == nil { userEntry = passwd.first { $0.uid == uid } }
        let finalGid = gid ?? userEntry?.gid ?? 0
        var extra: [UInt32] = []
        if let name = userEntry?.name {
            for g in groups where g.members.contains(name) && g.gid != finalGid && !extra.contains(g.gid) {
                extra.append(g.gid)
            }
        }
        for g in spec.supplementalGroups {
            if let n = UInt32(exactly: g), !extra.contains(n) { extra.append(n) }
        }
        return ResolvedUser(uid: uid, gid: finalGid, groups: extra, home: userEntry?.home ?? "/")
    }

    static func findFile(_ relative: String, layers: [String]) -> String? {
        for layer in layers.reversed() {
            if let text = FileIO.readString("\(layer)/\(relative)") { return text }
        }
        return nil
    }

    static func parsePasswd(_ text: String) -> [PasswdEntry] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 6, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { return nil }
            return PasswdEntry(name: String(f[0]), uid: uid, gid: gid, home: String(f[5]))
        }
    }

    static func parseGroup(_ text: String) -> [GroupEntry] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 3, let gid = UInt32(f[2]) else { return nil }
            let members = f.count >= 4 ? f[3].split(separator: ",").map(String.init) : []
            return GroupEntry(name: String(f[0]), gid: gid, members: members)
        }
    }
}
