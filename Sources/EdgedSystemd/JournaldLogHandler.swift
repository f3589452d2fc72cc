// edged's log lines as structured journal entries, through libsystemd's sd_journal_sendv.

import CSystemd
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging

/// Sends each log message to the journal with structured fields, so `journalctl -u edged -o verbose` shows them and
/// `journalctl -u edged POD=default/web` filters by them.
///
/// Fields: `MESSAGE`, `PRIORITY` (syslog 0–7 from the level), `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`,
/// `CODE_FUNC`, `EDGED_LOGGER` (the logger's label), and from the metadata:
/// - `pod` (edged's pod loggers carry `namespace/name`) → `POD=namespace/name`;
/// - `container` (`namespace/pod/container`, as the runtime logs it) → `CONTAINER=container`, and `POD=namespace/pod`
///   unless the entry already has a pod;
/// - `image` → `IMAGE=reference`;
/// - every other key as its journal field name (`restart-count` → `RESTART_COUNT`, see `fieldName`).
///
/// When the journal cannot take an entry (no journald socket, journald not answering), the line goes to stderr in
/// the klog format instead.
public struct JournaldLogHandler: LogHandler {
    /// journald's native socket, where libsystemd sends (fixed in libsystemd).
    public static let socketPath = "/run/systemd/journal/socket"

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    public let identifier: String
    private let fallback: StderrLogHandler

    /// - Parameters:
    ///   - identifier: `SYSLOG_IDENTIFIER`, the name `journalctl -t` (and edgectl) filters on.
    ///   - fallbackFileDescriptor: where lines go when the journal cannot take them.
    public init(label: String, identifier: String = "edged", fallbackFileDescriptor: Int32 = 2) {
        self.label = label
        self.identifier = identifier
        self.fallback = StderrLogHandler(label: label, fileDescriptor: fallbackFileDescriptor)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = LogFormat.merge(metadata, metadataProvider?.get(), event.metadata)
        let fields = JournaldLogHandler.fields(level: event.level, message: event.message.description, metadata: merged,
                                               file: event.file, function: event.function, line: event.line,
                                               identifier: identifier, label: label)
        // sd_journal_sendv returns success when the socket is missing ("fail silently"), so look for it first.
        let result = access(JournaldLogHandler.socketPath, F_OK) == 0 ? JournaldLogHandler.send(fields) : -ENOENT
        if result < 0 {
            fallback.log(event: LogEvent(level: event.level, message: event.message, metadata: merged,
                                         source: event.source, file: event.file, function: event.function,
                                         line: event.line))
        }
    }

    /// One journal entry's fields, in order, as `(NAME, value)`.
    public static func fields(level: Logger.Level, message: String, metadata: Logger.Metadata, file: String,
                              function: String, line: UInt, identifier: String, label: String) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("MESSAGE", message),
            ("PRIORITY", String(priority(level))),
            ("SYSLOG_IDENTIFIER", identifier),
            ("CODE_FILE", file),
            ("CODE_LINE", String(line)),
            ("CODE_FUNC", function),
            ("EDGED_LOGGER", label),
        ]
        var pod = metadata["pod"]?.description
        var others: [(String, String)] = []
        for key in metadata.keys.sorted() {
            let value = metadata[key]!.description
            switch key {
            case "pod":
                break
            case "container":
                let parts = value.split(separator: "/", omittingEmptySubsequences: false)
                if parts.count == 3 {
                    if pod == nil { pod = "\(parts[0])/\(parts[1])" }
                    others.append(("CONTAINER", String(parts[2])))
                } else {
                    others.append(("CONTAINER", value))
                }
            case "image":
                others.append(("IMAGE", value))
            default:
                others.append((fieldName(key), value))
            }
        }
        if let pod { fields.append(("POD", pod)) }
        return fields + others
    }

    /// Hands the fields to sd_journal_sendv(3): 0 when journald took them, a negative errno otherwise.
    static func send(_ fields: [(String, String)]) -> Int32 {
        // One buffer of `NAME=value` items; libsystemd itself uses the binary-safe form for values with newlines.
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for (name, value) in fields {
            let start = bytes.count
            bytes += name.utf8
            bytes.append(UInt8(ascii: "="))
            bytes += value.utf8
            ranges.append(start..<bytes.count)
        }
        return bytes.withUnsafeMutableBytes { buffer -> Int32 in
            let vectors = ranges.map { iovec(iov_base: buffer.baseAddress! + $0.lowerBound, iov_len: $0.count) }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }

    /// syslog priorities: 2 crit, 3 err, 4 warning, 5 notice, 6 info, 7 debug.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// The fields edged sets itself; metadata with these names goes to `EDGED_<NAME>` instead.
    static let ownFields: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "EDGED_LOGGER", "POD",
        "CONTAINER", "IMAGE", "MESSAGE_ID", "SYSLOG_FACILITY", "SYSLOG_PID", "SYSLOG_TIMESTAMP", "ERRNO",
    ]

    /// A journal field name as journald accepts it (systemd.journal-fields(7)): A–Z, 0–9 and `_`, not starting with
    /// `_` (trusted fields) or a digit, at most 64 characters. Keys that would collide with edged's own fields, or
    /// that start with `_` or a digit, get the prefix `EDGED_`.
    public static func fieldName(_ key: String) -> String {
        var name = String(key.uppercased().unicodeScalars.map { s -> Character in
            (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") ? Character(s) : "_"
        })
        if name.isEmpty || name.first == "_" || name.first!.isNumber || ownFields.contains(name) {
            name = "EDGED_" + name
        }
        return String(name.prefix(64))
    }
}
