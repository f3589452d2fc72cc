// The journald native protocol: structured fields in one datagram to /run/systemd/journal/socket.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging

/// Sends each log message to journald with structured fields, so `journalctl -u edged -o verbose` shows them and
/// `journalctl EDGED_POD=default/web` filters by them.
///
/// Fields: `MESSAGE`, `PRIORITY` (syslog 0–7 from the level), `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`,
/// `CODE_FUNC`, `EDGED_LOGGER` (the logger's label) and each metadata key as `EDGED_<KEY>` (upper-cased, other
/// characters replaced by `_`). Values with a newline use the binary-safe form `KEY\n<64-bit LE length>value\n`.
/// When sending fails (no journald, message too big) the line goes to stderr in the klog format instead.
public struct JournaldLogHandler: LogHandler {
    public static let defaultSocketPath = "/run/systemd/journal/socket"

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    public let identifier: String
    private let sender: UnixDatagramSender?
    private let fallback: StderrLogHandler

    /// - Parameters:
    ///   - socketPath: journald's native socket; tests pass their own.
    ///   - identifier: `SYSLOG_IDENTIFIER`, the name `journalctl -t` filters on.
    ///   - fallbackFileDescriptor: where lines go when journald cannot take them.
    public init(label: String, socketPath: String = JournaldLogHandler.defaultSocketPath, identifier: String = "edged",
                fallbackFileDescriptor: Int32 = 2) {
        self.label = label
        self.identifier = identifier
        self.sender = try? UnixDatagramSender(path: socketPath)
        self.fallback = StderrLogHandler(label: label, fileDescriptor: fallbackFileDescriptor)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = LogFormat.merge(metadata, metadataProvider?.get(), event.metadata)
        var fields: [(String, String)] = [
            ("MESSAGE", event.message.description),
            ("PRIORITY", String(JournaldLogHandler.priority(event.level))),
            ("SYSLOG_IDENTIFIER", identifier),
            ("CODE_FILE", event.file),
            ("CODE_LINE", String(event.line)),
            ("CODE_FUNC", event.function),
            ("EDGED_LOGGER", label),
        ]
        for key in merged.keys.sorted() {
            fields.append(("EDGED_" + JournaldLogHandler.fieldName(key), merged[key]!.description))
        }
        do {
            guard let sender else { throw SystemdSocketError(socketPath: JournaldLogHandler.defaultSocketPath, errno: EBADF) }
            try sender.send(JournaldLogHandler.encode(fields))
        } catch {
            fallback.log(event: LogEvent(level: event.level, message: event.message, metadata: merged,
                                         source: event.source, file: event.file, function: event.function,
                                         line: event.line))
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

    /// A journal field name: A–Z, 0–9 and `_` only.
    public static func fieldName(_ key: String) -> String {
        String(key.uppercased().unicodeScalars.map { s -> Character in
            (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") ? Character(s) : "_"
        })
    }

    /// Encodes fields in the native protocol: `KEY=value\n`, or `KEY\n<u64 LE length>value\n` when the value has a
    /// newline (the binary-safe form).
    public static func encode(_ fields: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (key, value) in fields {
            let v = Array(value.utf8)
            out += key.utf8
            if v.contains(10) {
                out.append(10)
                var length = UInt64(v.count).littleEndian
                withUnsafeBytes(of: &length) { out += $0 }
            } else {
                out.append(UInt8(ascii: "="))
            }
            out += v
            out.append(10)
        }
        return out
    }
}
