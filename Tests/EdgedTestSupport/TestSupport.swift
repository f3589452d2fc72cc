// Helpers that only tests import: temp dirs, running host commands, a busybox root filesystem.

import Foundation

/// A fresh directory under /tmp (or $EDGED_TEST_TMP), removed by `remove()`.
public struct TempDir: Sendable {
    public let path: String

    public init(_ prefix: String = "edged-test") throws {
        let base = ProcessInfo.processInfo.environment["EDGED_TEST_TMP"] ?? "/tmp"
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw TestFailure("mkdtemp failed: errno \(errno)") }
        path = String(cString: p)
    }

    public func sub(_ name: String) -> String { "\(path)/\(name)" }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Result of a host command.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs a host command (absolute path or found on PATH) and waits for it.
@discardableResult
public func runCommand(_ args: [String], environment: [String: String]? = nil, check: Bool = true) throws -> CommandResult {
    let p = Process()
    let exe = args[0].hasPrefix("/") ? args[0] : (findExecutable(args[0]) ?? args[0])
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = Array(args.dropFirst())
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    // Read both pipes concurrently so a chatty command cannot block on a full pipe.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    let r = CommandResult(status: p.terminationStatus,
                          stdout: String(decoding: outData, as: UTF8.self),
                          stderr: String(decoding: errData, as: UTF8.self))
    if check && r.status != 0 {
        throw TestFailure("\(args.joined(separator: " ")) exited \(r.status): \(r.stderr)\(r.stdout)")
    }
    return r
}

public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for dir in path.split(separator: ":") + ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// True when the tests run as root (CI does); container tests need it.
public var isRoot: Bool { getuid() == 0 }

/// Builds a minimal root filesystem from Debian's busybox-static at `path`: /bin/busybox plus applet links,
/// /etc/passwd and /etc/group with root, nobody and a user "app" (uid 1000, gid 1000), and empty /tmp.
/// Nothing binary is committed: the busybox binary comes from the host package.
public func makeBusyboxRootfs(at path: String) throws {
    let fm = FileManager.default
    guard fm.fileExists(atPath: "/bin/busybox") else {
        throw TestFailure("/bin/busybox is missing: apt-get install busybox-static")
    }
    for d in ["bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev"] {
        try fm.createDirectory(atPath: "\(path)/\(d)", withIntermediateDirectories: true)
    }
    try fm.copyItem(atPath: "/bin/busybox", toPath: "\(path)/bin/busybox")
    for applet in ["sh", "ls", "cat", "echo", "sleep", "id", "hostname", "true", "false", "env", "pwd", "ps", "kill",
                   "wget", "httpd", "nc", "mkdir", "touch", "grep", "head", "yes", "dd", "date", "mount", "stat", "seq", "test", "rm", "cp", "wc"] {
        try fm.createSymbolicLink(atPath: "\(path)/bin/\(applet)", withDestinationPath: "busybox")
    }
    try "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        .write(toFile: "\(path)/etc/passwd", atomically: true, encoding: .utf8)
    try "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"
        .write(toFile: "\(path)/etc/group", atomically: true, encoding: .utf8)
    chmod("\(path)/tmp", 0o1777)
}

/// The whole text of a /proc (or /sys) file, read until EOF. Foundation's `String(contentsOfFile:)` trusts the
/// size that stat reports, which is 0 for these files, and returns only the first read (~4 KB): with a mount table
/// over 4 KB, /proc/self/mountinfo then lacked the newest mounts, so tests missed mounts and left them behind.
public func procText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { break }
        bytes.append(contentsOf: buffer[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
