import CSystemd
import EdgedSystemd
import Foundation
import Logging
import Testing

@Suite struct JournaldLogHandlerTests {
    /// Through sd_journal_sendv into a real journald, read back from its journal files.
    @Test(.enabled(if: canRunJournald, "needs root and systemd-journald (package systemd)"))
    func fieldsReachARealJournal() throws {
        let (line, dir) = try withPrivateJournald { () -> Int in
            var logger = Logger(label: "edged.pods") { JournaldLogHandler(label: $0) }
            logger[metadataKey: "pod"] = "default/web"
            logger.warning("container restarted", metadata: ["restart-count": "3", "image": "busybox:1.36"]); let line = #line
            logger.info("plain info line")
            // The runtime logs containers as namespace/pod/container: the pod comes from there when absent.
            Logger(label: "edged.runtime") { JournaldLogHandler(label: $0) }
                .error("container monitor vanished\nsecond line", metadata: ["container": "kube-system/dns/coredns"])
            Logger(label: "edged") { JournaldLogHandler(label: $0) }
                .critical("state dir unwritable", metadata: ["_PID": "1", "message": "spoof", "1st": "x"])
            return line
        }
        let mine = try journalEntries(in: dir).filter { $0["_PID"] == String(getpid()) }
        let warning = try #require(mine.first { $0["MESSAGE"] == "container restarted" }, "entries: \(mine)")
        #expect(warning["PRIORITY"] == "4")
        #expect(warning["SYSLOG_IDENTIFIER"] == "edged")
        #expect(warning["CODE_FILE"]?.hasSuffix("JournaldLogHandlerTests.swift") == true)
        #expect(warning["CODE_LINE"] == String(line))
        #expect(warning["CODE_FUNC"]?.contains("fieldsReachARealJournal") == true)
        #expect(warning["POD"] == "default/web")
        #expect(warning["IMAGE"] == "busybox:1.36")
        #expect(warning["RESTART_COUNT"] == "3")
        #expect(warning["EDGED_LOGGER"] == "edged.pods")
        #expect(warning["CONTAINER"] == nil)

        let info = try #require(mine.first { $0["MESSAGE"] == "plain info line" })
        #expect(info["PRIORITY"] == "6")
        #expect(info["POD"] == "default/web")

        let error = try #require(mine.first { $0["MESSAGE"] == "container monitor vanished\nsecond line" },
                                 "a multi-line message arrives whole")
        #expect(error["PRIORITY"] == "3")
        #expect(error["POD"] == "kube-system/dns")
        #expect(error["CONTAINER"] == "coredns")

        // Metadata cannot forge trusted (_PID) or edged's own fields.
        let critical = try #require(mine.first { $0["MESSAGE"] == "state dir unwritable" })
        #expect(critical["PRIORITY"] == "2")
        #expect(critical["_PID"] == String(getpid()))
        #expect(critical["EDGED__PID"] == "1")
        #expect(critical["EDGED_MESSAGE"] == "spoof")
        #expect(critical["EDGED_1ST"] == "x")
    }

    @Test func fieldsFromMetadata() {
        let fields = JournaldLogHandler.fields(level: .warning, message: "m", metadata: ["pod": "a/b", "container": "a/b/c", "image": "i",
                                                                                        "note": "n"],
                                               file: "f.swift", function: "fn()", line: 7, identifier: "edged", label: "l")
        let names = fields.map(\.0)
        #expect(names == ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "EDGED_LOGGER", "POD",
                          "CONTAINER", "IMAGE", "NOTE"])
        #expect(fields.first { $0.0 == "POD" }?.1 == "a/b")
        #expect(fields.first { $0.0 == "CONTAINER" }?.1 == "c")
        // A container name that is not namespace/pod/container is kept whole and adds no pod.
        let odd = JournaldLogHandler.fields(level: .info, message: "m", metadata: ["container": "sidecar"], file: "f", function: "g",
                                            line: 1, identifier: "edged", label: "l")
        #expect(odd.first { $0.0 == "CONTAINER" }?.1 == "sidecar")
        #expect(!odd.contains { $0.0 == "POD" })
    }

    @Test func prioritiesAndFieldNames() {
        #expect(JournaldLogHandler.priority(.trace) == 7)
        #expect(JournaldLogHandler.priority(.debug) == 7)
        #expect(JournaldLogHandler.priority(.info) == 6)
        #expect(JournaldLogHandler.priority(.notice) == 5)
        #expect(JournaldLogHandler.priority(.warning) == 4)
        #expect(JournaldLogHandler.priority(.error) == 3)
        #expect(JournaldLogHandler.priority(.critical) == 2)
        #expect(JournaldLogHandler.fieldName("image.ref-1") == "IMAGE_REF_1")
        #expect(JournaldLogHandler.fieldName("priority") == "EDGED_PRIORITY")
        #expect(JournaldLogHandler.fieldName("_boot_id") == "EDGED__BOOT_ID")
        #expect(JournaldLogHandler.fieldName("9lives") == "EDGED_9LIVES")
        #expect(JournaldLogHandler.fieldName("") == "EDGED_")
        #expect(JournaldLogHandler.fieldName(String(repeating: "k", count: 100)).count == 64)
    }

    /// No journald (edged run by hand in a container, or journald gone): the line goes to stderr instead.
    @Test(.enabled(if: getuid() == 0, "needs root (a private mount namespace)"))
    func fallsBackToStderrWithoutAJournal() throws {
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]) }
        let writeEnd = pipeFDs[1]
        try onPrivateRun {
            // /run is empty here: no /run/systemd/journal/socket.
            let logger = Logger(label: "t") { JournaldLogHandler(label: $0, fallbackFileDescriptor: writeEnd) }
            logger.error("cannot pull image", metadata: ["image": "busybox:latest"])
        }
        close(pipeFDs[1])
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(pipeFDs[0], &buf, buf.count)
        let line = String(decoding: buf[0..<max(n, 0)], as: UTF8.self)
        #expect(line.hasPrefix("E"))
        #expect(line.contains("] cannot pull image image=busybox:latest\n"))
    }
}
