// Volumes whose content comes from the API server: configMap, secret, downwardAPI and projected
// (serviceAccountToken, configMap, secret, downwardAPI). Written like kubelet's AtomicWriter: the files live in a
// timestamped directory, `..data` is a symlink to it, and each visible name is a symlink through `..data`, so an
// update (a new timestamped directory, then one rename of `..data`) is seen by containers all at once.
// Secret and projected volumes sit on a tmpfs of their own, so secrets never reach the flash.

import EdgedCore
import Glibc

enum APIVolumes {
    /// One file of a volume: relative path, bytes, mode.
    struct File: Equatable {
        var path: String
        var bytes: [UInt8]
        var mode: Int32
    }

    static func isAPIBacked(_ v: Volume) -> Bool {
        v.configMap != nil || v.secret != nil || v.downwardAPI != nil || v.projected != nil
    }

    /// Writes (or refreshes) every API-backed volume of `pod`; returns volume name → host directory.
    /// A missing non-optional object fails with kubelet's wording (`configmap "x" not found`), naming the volume.
    static func sync(pod: Pod, podDir: String, podIPs: [String], objects: any PodAPIObjects) async throws(EdgedError) -> [String: String] {
        var paths: [String: String] = [:]
        for v in pod.spec.volumes ?? [] where isAPIBacked(v) {
            let kind = v.configMap != nil ? "configmap" : v.secret != nil ? "secret" : v.downwardAPI != nil ? "downward-api" : "projected"
            let dir = "\(podDir)/volumes/kubernetes.io~\(kind)/\(v.name)"
            let files: [File]
            do {
                files = try await content(of: v, pod: pod, podIPs: podIPs, objects: objects)
            } catch {
                throw EdgedError(error.code, "MountVolume.SetUp failed for volume \"\(v.name)\" : \(error.message)")
            }
            do {
                try write(files, to: dir, tmpfs: v.secret != nil || v.projected != nil)
            } catch {
                throw EdgedError(error.code, "MountVolume.SetUp failed for volume \"\(v.name)\" : \(error.message)")
            }
            paths[v.name] = dir
        }
        return paths
    }

    // MARK: - Content

    static func content(of v: Volume, pod: Pod, podIPs: [String], objects: any PodAPIObjects) async throws(EdgedError) -> [File] {
        if let cm = v.configMap {
            let data = try await configMap(cm.name, optional: cm.optional, pod: pod, objects: objects)
            return try project(data, items: cm.items, mode: cm.defaultMode ?? 0o644, what: "configmap \"\(cm.name ?? "")\"")
        }
        if let s = v.secret {
            let data = try await secret(s.secretName, optional: s.optional, pod: pod, objects: objects)
            return try project(data, items: s.items, mode: s.defaultMode ?? 0o644, what: "secret \"\(s.secretName ?? "")\"")
        }
        if let d = v.downwardAPI {
            return try downward(d.items ?? [], mode: d.defaultMode ?? 0o644, pod: pod, podIPs: podIPs, objects: objects)
        }
        guard let p = v.projected else { return [] }
        let mode = p.defaultMode ?? 0o644
        var files: [File] = []
        for src in p.sources ?? [] {
            if let cm = src.configMap {
                let data = try await configMap(cm.name, optional: cm.optional, pod: pod, objects: objects)
                files += try project(data, items: cm.items, mode: mode, what: "configmap \"\(cm.name ?? "")\"")
            } else if let s = src.secret {
                let data = try await secret(s.name, optional: s.optional, pod: pod, objects: objects)
                files += try project(data, items: s.items, mode: mode, what: "secret \"\(s.name ?? "")\"")
            } else if let d = src.downwardAPI {
                files += try downward(d.items ?? [], mode: mode, pod: pod, podIPs: podIPs, objects: objects)
            } else if let t = src.serviceAccountToken {
                try checkPath(t.path)
                let token = try await objects.serviceAccountToken(pod: pod, audience: t.audience, expirationSeconds: t.expirationSeconds ?? 3600)
                files.append(File(path: t.path, bytes: Array(token.utf8), mode: mode))
            }
        }
        return files
    }

    private static func configMap(_ name: String?, optional: Bool?, pod: Pod, objects: any PodAPIObjects) async throws(EdgedError) -> [String: [UInt8]] {
        guard let name, !name.isEmpty else { throw EdgedError(.invalidManifest, "configMap volume has no name") }
        if let data = try await objects.configMap(namespace: pod.namespace, name: name) { return data }
        if optional == true { return [:] }
        throw EdgedError(.notFound, "configmap \"\(name)\" not found")
    }

    private static func secret(_ name: String?, optional: Bool?, pod: Pod, objects: any PodAPIObjects) async throws(EdgedError) -> [String: [UInt8]] {
        guard let name, !name.isEmpty else { throw EdgedError(.invalidManifest, "secret volume has no secretName") }
        if let data = try await objects.secret(namespace: pod.namespace, name: name) { return data }
        if optional == true { return [:] }
        throw EdgedError(.notFound, "secret \"\(name)\" not found")
    }

    /// All keys (as files named by the key) or just `items`, each at its path.
    static func project(_ data: [String: [UInt8]], items: [KeyToPath]?, mode: Int32, what: String) throws(EdgedError) -> [File] {
        guard let items else {
            return try data.keys.sorted().map { key throws(EdgedError) in
                try checkPath(key)
                return File(path: key, bytes: data[key]!, mode: mode)
            }
        }
        var files: [File] = []
        for item in items {
            try checkPath(item.path)
            guard let bytes = data[item.key] else {
                throw EdgedError(.notFound, "\(what) has no key \"\(item.key)\"")
            }
            files.append(File(path: item.path, bytes: bytes, mode: item.mode ?? mode))
        }
        return files
    }

    static func downward(_ items: [DownwardAPIVolumeFile], mode: Int32, pod: Pod, podIPs: [String], objects: (any PodAPIObjects)?) throws(EdgedError) -> [File] {
        var files: [File] = []
        for item in items {
            try checkPath(item.path)
            let value: String
            if let f = item.fieldRef {
                value = try PodEnv.fieldValue(f.fieldPath, pod: pod, podIPs: podIPs, hostIPs: objects?.hostIPs ?? [])
            } else if let r = item.resourceFieldRef {
                value = try PodEnv.resourceValue(r, pod: pod, container: nil)
            } else {
                throw EdgedError(.invalidManifest, "downwardAPI item \(item.path) has neither fieldRef nor resourceFieldRef")
            }
            files.append(File(path: item.path, bytes: Array(value.utf8), mode: item.mode ?? mode))
        }
        return files
    }

    /// Paths inside a volume must be relative and must not climb out of it.
    static func checkPath(_ path: String) throws(EdgedError) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.hasPrefix("/"), !parts.contains(".."), !parts.contains(""), !path.hasPrefix("..") else {
            throw EdgedError(.invalidManifest, "volume path \"\(path)\" must be relative, must not contain '..' and must not start with '..'")
        }
    }

    // MARK: - Atomic writer

    /// Makes `dir` show exactly `files`. Does nothing when they are already there.
    static func write(_ files: [File], to dir: String, tmpfs: Bool) throws(EdgedError) {
        guard Files.makeDirectories(dir, mode: 0o755) else {
            throw EdgedError(.io, "cannot create \(dir): \(String(cString: strerror(errno)))")
        }
        if tmpfs && !isMountPoint(dir) {
            if mount("tmpfs", dir, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=0755,size=16m") != 0 {
                throw EdgedError(.io, "cannot mount a tmpfs for secrets on \(dir): \(String(cString: strerror(errno)))")
            }
        }
        if sameContent(current(dir), files) { return }
        var tv = timespec()
        clock_gettime(CLOCK_REALTIME, &tv)
        let stamp = "..\(tv.tv_sec)_\(tv.tv_nsec)"
        let tsDir = "\(dir)/\(stamp)"
        guard Files.makeDirectories(tsDir, mode: 0o755) else {
            throw EdgedError(.io, "cannot create \(tsDir): \(String(cString: strerror(errno)))")
        }
        for f in files {
            let path = "\(tsDir)/\(f.path)"
            if let slash = path.lastIndex(of: "/") { _ = Files.makeDirectories(String(path[..<slash]), mode: 0o755) }
            try writeFile(path, f.bytes, mode: mode_t(f.mode & 0o7777))
        }
        let tmpLink = "\(dir)/..data_tmp"
        unlink(tmpLink)
        guard symlink(stamp, tmpLink) == 0, rename(tmpLink, "\(dir)/..data") == 0 else {
            throw EdgedError(.io, "cannot switch \(dir)/..data to the new content: \(String(cString: strerror(errno)))")
        }
        // Visible names: one symlink per top-level entry, through ..data; stale ones and old content go.
        let top = Set(files.map { String($0.path.split(separator: "/")[0]) })
        for name in top {
            let link = "\(dir)/\(name)"
            var st = stat()
            if lstat(link, &st) != 0 { _ = symlink("..data/\(name)", link) }
        }
        for entry in Files.list(dir) ?? [] {
            if entry.hasPrefix("..") {
                if entry != "..data" && entry != stamp { Files.removeTree("\(dir)/\(entry)") }
            } else if !top.contains(entry) {
                unlink("\(dir)/\(entry)")
            }
        }
        let fd = open(dir, O_RDONLY | O_DIRECTORY)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// What `dir` shows now (through ..data), or nil when it has never been written.
    static func current(_ dir: String) -> [File]? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("\(dir)/..data", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        let base = "\(dir)/\(String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))"
        var out: [File] = []
        func walk(_ rel: String) {
            for e in Files.list(rel.isEmpty ? base : "\(base)/\(rel)") ?? [] {
                let r = rel.isEmpty ? e : "\(rel)/\(e)"
                var st = stat()
                guard lstat("\(base)/\(r)", &st) == 0 else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR { walk(r); continue }
                out.append(File(path: r, bytes: Files.read("\(base)/\(r)") ?? [], mode: Int32(st.st_mode & 0o7777)))
            }
        }
        walk("")
        return out
    }

    /// `files` order is the spec's; compare as sets.
    static func sameContent(_ a: [File]?, _ b: [File]) -> Bool {
        guard let a else { return false }
        return a.sorted { $0.path < $1.path } == b.sorted { $0.path < $1.path }
    }

    private static func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t) throws(EdgedError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw EdgedError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw EdgedError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            off += n
        }
        fchmod(fd, mode)
        fsync(fd)
    }

    static func isMountPoint(_ dir: String) -> Bool {
        var a = stat(), b = stat()
        guard stat(dir, &a) == 0, stat("\(dir)/..", &b) == 0 else { return false }
        return a.st_dev != b.st_dev
    }

    /// Unmounts every mount under `podDir` (secret tmpfs volumes), deepest first, before the directory is removed.
    static func unmountAll(under podDir: String) {
        guard let text = Files.readText("/proc/self/mountinfo") else { return }
        let prefix = podDir.hasSuffix("/") ? podDir : podDir + "/"
        let points = text.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            guard f.count > 4 else { return nil }
            let p = String(f[4])
            return p.hasPrefix(prefix) ? p : nil
        }
        for p in points.sorted(by: { $0.count > $1.count }) { umount2(p, Int32(MNT_DETACH)) }
    }
}
