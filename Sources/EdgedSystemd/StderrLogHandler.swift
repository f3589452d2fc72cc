// A klog-style one-line log format on stderr, for runs outside systemd (a terminal, a test, a container).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging

/// Writes `I1121 23:59:59.123456 12345 file.swift:42] message key=value` lines to stderr, like kubelet does, so
/// people who know kubelet's logs read these at once. Each line is one `write(2)`, so lines from several threads
/// do not interleave.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    private let fd: Int32

    public init(label: String, fileDescriptor: Int32 = 2) {
        self.label = label
        self.fd = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = LogFormat.merge(metadata, metadataProvider?.get(), event.metadata)
        let line = LogFormat.klogLine(level: event.level, message: event.message.description, metadata: merged,
                                      file: event.file, line: event.line)
        LogFormat.writeAll(fd, Array(line.utf8))
    }
}

/// Helpers shared by the log handlers.
enum LogFormat {
    static func merge(_ a: Logger.Metadata, _ b: Logger.Metadata?, _ c: Logger.Metadata?) -> Logger.Metadata {
        var m = a
        if let b { m.merge(b) { _, new in new } }
        if let c { m.merge(c) { _, new in new } }
        return m
    }

    /// The klog severity letter: I, W, E (klog's F means the process is about to exit, so critical is E too).
    static func severity(_ level: Logger.Level) -> Character {
        switch level {
        case .trace, .debug, .info, .notice: "I"
        case .warning: "W"
        case .error, .critical: "E"
        }
    }

    /// One line with its trailing newline: `Lmmdd hh:mm:ss.uuuuuu pid file:line] msg k=v`, local time.
    static func klogLine(level: Logger.Level, message: String, metadata: Logger.Metadata, file: String, line: UInt,
                         pid: Int32 = getpid()) -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var seconds = tv.tv_sec
        var tm = tm()
        localtime_r(&seconds, &tm)
        func pad(_ v: Int, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        let base = file.split(separator: "/").last.map(String.init) ?? file
        var out = "\(severity(level))\(pad(Int(tm.tm_mon) + 1, 2))\(pad(Int(tm.tm_mday), 2)) "
        out += "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(Int(tv.tv_usec), 6)) "
        out += "\(pid) \(base):\(line)] \(message)"
        for key in metadata.keys.sorted() {
            out += " \(key)=\(quoted(metadata[key]!.description))"
        }
        out += "\n"
        return out
    }

    /// klog quotes values with spaces, quotes or control characters.
    static func quoted(_ value: String) -> String {
        let needs = value.isEmpty || value.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.value < 0x20 }
        guard needs else { return value }
        var out = "\""
        for s in value.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(s)
            }
        }
        return out + "\""
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = write(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }
}
