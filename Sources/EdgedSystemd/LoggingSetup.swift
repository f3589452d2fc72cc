// Choosing where logs go: journald under systemd, klog-style stderr otherwise.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging

public enum LoggingSetup {
    /// Bootstraps swift-log once per process: journald when stderr is systemd's journal stream, else stderr.
    public static func bootstrap(level: Logger.Level) {
        let journal = stderrIsJournal(journalStream: environmentValue("JOURNAL_STREAM"))
        LoggingSystem.bootstrap { label in
            if journal {
                var handler = JournaldLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StderrLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// True when `journalStream` ("dev:inode", from `$JOURNAL_STREAM`) names the file that `fd` is.
    ///
    /// systemd sets JOURNAL_STREAM for services whose stderr goes to the journal; a child whose stderr was
    /// redirected inherits the variable, so the device and inode must match stderr, as systemd.exec(5) says.
    public static func stderrIsJournal(journalStream: String?, fd: Int32 = 2) -> Bool {
        guard let journalStream else { return false }
        let parts = journalStream.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }
}
