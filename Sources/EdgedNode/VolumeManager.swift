// emptyDir and hostPath volumes: directories on the node that containers bind-mount.

import EdgedCore
import Glibc

enum VolumeManager {
    /// Creates the pod's emptyDir directories and checks hostPath types like kubelet; returns volume name → host path.
    /// Errors name the volume and say what to fix.
    static func prepare(pod: Pod, podDir: String) throws(EdgedError) -> [String: String] {
        var paths: [String: String] = [:]
        for v in pod.spec.volumes ?? [] {
            if let ed = v.emptyDir {
                let dir = "\(podDir)/volumes/kubernetes.io~empty-dir/\(v.name)"
                guard Files.makeDirectories(dir, mode: 0o777) else {
                    throw EdgedError(.io, "volume \(v.name): cannot create \(dir): \(String(cString: strerror(errno)))")
                }
                if ed.medium == "Memory" && !APIVolumes.isMountPoint(dir) {
                    // A tmpfs, sized by sizeLimit (kubelet: the pod's memory limit or node allocatable otherwise).
                    var options = "mode=0777"
                    if let limit = ed.sizeLimit {
                        options += ",size=\(try limit.value())"
                    }
                    guard mount("tmpfs", dir, "tmpfs", UInt(MS_NOSUID | MS_NODEV), options) == 0 else {
                        throw EdgedError(.io, "volume \(v.name): cannot mount a tmpfs (medium: Memory) on \(dir): \(String(cString: strerror(errno)))")
                    }
                } else if let medium = ed.medium, !medium.isEmpty, medium != "Memory" {
                    throw EdgedError(.invalidManifest, "volume \(v.name): emptyDir medium \"\(medium)\" is not supported (use \"\" or Memory)")
                }
                chmod(dir, 0o777)
                paths[v.name] = dir
            } else if let hp = v.hostPath {
                try checkHostPath(hp, volume: v.name)
                paths[v.name] = hp.path
            }
        }
        return paths
    }

    static func checkHostPath(_ hp: HostPathVolumeSource, volume: String) throws(EdgedError) {
        guard hp.path.hasPrefix("/") else {
            throw EdgedError(.invalidManifest, "volume \(volume): hostPath \"\(hp.path)\" must be an absolute path")
        }
        var st = stat()
        let exists = stat(hp.path, &st) == 0
        let kind = st.st_mode & S_IFMT
        func fail(_ what: String) -> EdgedError {
            EdgedError(.invalidManifest, "volume \(volume): hostPath \(hp.path) \(what)")
        }
        switch hp.type ?? "" {
        case "":
            return
        case "DirectoryOrCreate":
            if !exists && !Files.makeDirectories(hp.path, mode: 0o755) { throw fail("could not be created: \(String(cString: strerror(errno)))") }
            if exists && kind != S_IFDIR { throw fail("exists but is not a directory") }
        case "Directory":
            if !exists || kind != S_IFDIR { throw fail("is not a directory (type: Directory needs it to exist)") }
        case "FileOrCreate":
            if !exists {
                let fd = open(hp.path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
                if fd < 0 { throw fail("could not be created: \(String(cString: strerror(errno)))") }
                close(fd)
            } else if kind != S_IFREG {
                throw fail("exists but is not a file")
            }
        case "File":
            if !exists || kind != S_IFREG { throw fail("is not a file (type: File needs it to exist)") }
        case "Socket":
            if !exists || kind != S_IFSOCK { throw fail("is not a socket") }
        case "CharDevice":
            if !exists || kind != S_IFCHR { throw fail("is not a character device") }
        case "BlockDevice":
            if !exists || kind != S_IFBLK { throw fail("is not a block device") }
        default:
            throw fail("has unknown type \"\(hp.type!)\"")
        }
    }
}
