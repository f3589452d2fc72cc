// The static pod source: Pod manifests in a directory, reconciled on every change.

import EdgedCore
import Glibc
import Logging
import Synchronization

/// A pod the node should run, with where it came from.
public struct DesiredPod: Sendable, Equatable {
    public var pod: Pod
    /// The manifest file (static pods), or "api".
    public var source: String

    public init(pod: Pod, source: String) {
        self.pod = pod
        self.source = source
    }
}

/// Reads every manifest in a directory and reports the full desired set whenever a file is added, edited or
/// removed (inotify, with a periodic rescan as a safety net like kubelet's file source).
///
/// A file that fails to parse fails alone: its error is reported for that file and the other files' pods
/// stay as they were. Pods get kubelet's static-pod treatment: namespace defaults to "default", the UID is
/// derived from the node name, the file path and the file content (so an edit means a new pod), and the name
/// gets the "-NODENAME" suffix kubelet gives mirror pods.
public struct ManifestSource: Sendable {
    public let directory: String
    public let nodeName: String
    public let rescanInterval: Duration

    public init(directory: String, nodeName: String, rescanInterval: Duration = .seconds(20)) {
        self.directory = directory
        self.nodeName = nodeName
        self.rescanInterval = rescanInterval
    }

    /// One scan's outcome.
    public struct Scan: Sendable {
        public var pods: [DesiredPod]
        /// file → error message, for files that could not be used.
        public var errors: [String: String]
    }

    /// Reads the directory once. Dotfiles, editor backups and non-manifest extensions are ignored, like kubelet.
    public func scan() -> Scan {
        var result = Scan(pods: [], errors: [:])
        guard let entries = Files.list(directory) else {
            if errno != ENOENT { result.errors[directory] = "cannot read manifest dir \(directory): \(String(cString: strerror(errno)))" }
            return result
        }
        let names = entries.filter { !$0.hasPrefix(".") && ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json")) }
        var seen: [String: String] = [:]
        for name in names.sorted() {
            let path = "\(directory)/\(name)"
            let text: String
            switch Self.read(path) {
            case .text(let t): text = t
            case .vanished: continue  // removed since the listing: a removal, not an error
            case .unreadable(let message):
                result.errors[path] = message
                continue
            }
            do {
                for var pod in try Manifest.decodePods(text, source: path) {
                    pod.metadata.namespace = pod.metadata.namespace ?? "default"
                    pod.metadata.name = "\(pod.name)-\(nodeName)"
                    pod.metadata.uid = Self.staticPodUID(nodeName: nodeName, source: path, content: text, name: pod.name)
                    pod.spec.nodeName = nodeName
                    let key = pod.fullName
                    if let other = seen[key] {
                        result.errors[path] = "\(path): pod \(key) is already defined in \(other); rename one of them"
                        continue
                    }
                    seen[key] = path
                    result.pods.append(DesiredPod(pod: pod, source: path))
                }
            } catch {
                result.errors[path] = error.message
            }
        }
        return result
    }

    enum FileRead: Equatable {
        case text(String)
        /// Gone between the directory listing and the read (an editor's or an operator's `rm` during a scan).
        case vanished
        case unreadable(String)
    }

    /// Reads one manifest. A file that no longer exists was removed after the listing and is not reported; a name
    /// that still exists but cannot be read (a dangling symlink, no permission, too large) is.
    static func read(_ path: String) -> FileRead {
        if let text = Files.readText(path, limit: 4 << 20) { return .text(text) }
        let readErrno = errno
        if readErrno == ENOENT {
            // The name itself gone: removed after the listing. The name still there: a symlink to nothing.
            var st = stat()
            if lstat(path, &st) == 0 {
                return .unreadable("cannot read \(path): it is a symlink to a file that does not exist; fix or remove the link")
            }
            if errno == ENOENT { return .vanished }
        }
        return .unreadable("cannot read \(path): \(String(cString: strerror(readErrno)))")
    }

    /// Yields a scan at start, after every change in the directory, and every `rescanInterval`.
    public func scans() -> AsyncStream<Scan> {
        AsyncStream { continuation in
            let watcher = DirectoryWatcher(path: directory)
            let task = Task {
                var last: [DesiredPod]? = nil
                var lastErrors: [String: String]? = nil
                while !Task.isCancelled {
                    let s = scan()
                    if s.pods != last || s.errors != lastErrors {
                        last = s.pods
                        lastErrors = s.errors
                        continuation.yield(s)
                    }
                    await watcher.waitForChange(timeout: rescanInterval)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in
                task.cancel()
                watcher.close()
            }
        }
    }

    /// Kubelet derives a static pod's UID from its content, node and source; this does the same (FNV-1a, 128 bits).
    static func staticPodUID(nodeName: String, source: String, content: String, name: String) -> String {
        var h1: UInt64 = 0xcbf2_9ce4_8422_2325
        var h2: UInt64 = 0x8422_2325_cbf2_9ce4
        for byte in "\(nodeName)\u{0}\(source)\u{0}\(name)\u{0}\(content)".utf8 {
            h1 = (h1 ^ UInt64(byte)) &* 0x100_0000_01b3
            h2 = (h2 ^ UInt64(byte)) &* 0x100_0000_01b3 &+ 0x9e37_79b9
        }
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return hex(h1) + hex(h2)
    }
}

/// Waits for changes in one directory with inotify, on one small dedicated thread blocked in poll(2), so an idle
/// node does not wake up to look. Creating the directory later is noticed by the periodic rescan.
final class DirectoryWatcher: @unchecked Sendable {
    private let fd: Int32
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    init(path: String) {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        var pipeFDs: [Int32] = [-1, -1]
        if pipe(&pipeFDs) == 0 {
            for f in pipeFDs { _ = fcntl(f, F_SETFD, FD_CLOEXEC) }
        } else {
            pipeFDs = [-1, -1]
        }
        wakeFD = pipeFDs[0]
        wakeWriteFD = pipeFDs[1]
        guard fd >= 0, wakeFD >= 0 else { return }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF)
        _ = inotify_add_watch(fd, path, mask)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let watcher = Unmanaged<DirectoryWatcher>.fromOpaque(arg!).takeRetainedValue()
            watcher.loop()
            return nil
        }, context)
        if rc == 0 { pthread_detach(thread) } else { Unmanaged<DirectoryWatcher>.fromOpaque(context).release() }
    }

    private func loop() {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, -1)
            if n < 0 { if errno == EINTR { continue }; return }
            if fds[1].revents != 0 {
                Glibc.close(fd)
                Glibc.close(wakeFD)
                Glibc.close(wakeWriteFD)
                return
            }
            while read(fd, &buf, buf.count) > 0 {}
            signal()
        }
    }

    private func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter { s.waiter = nil; return w }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns after a change (plus a short settle delay so an editor's write-then-rename lands as one change),
    /// or after `timeout`.
    func waitForChange(timeout: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.signal()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.pending { s.pending = false; return true }
                s.waiter = c
                return false
            }
            if ready { c.resume() }
        }
        timer.cancel()
        state.withLock { $0.pending = false }
        try? await Task.sleep(for: .milliseconds(15))
    }

    func close() {
        var one: UInt8 = 1
        if wakeWriteFD >= 0 { _ = write(wakeWriteFD, &one, 1) }
    }
}
