import EdgedSystemd
import Foundation
import Logging
import Testing

/// Parses the journald native protocol, both field forms.
func parseJournalFields(_ data: [UInt8]) -> [String: String]? {
    var fields: [String: String] = [:]
    var i = 0
    while i < data.count {
        guard let nl = data[i...].firstIndex(of: 10) else { return nil }
        let line = data[i..<nl]
        if let eq = line.firstIndex(of: UInt8(ascii: "=")) {
            fields[String(decoding: data[i..<eq], as: UTF8.self)] = String(decoding: data[(eq + 1)..<nl], as: UTF8.self)
            i = nl + 1
        } else {
            let key = String(decoding: line, as: UTF8.self)
            guard nl + 9 <= data.count else { return nil }
            var length: UInt64 = 0
            for b in 0..<8 { length |= UInt64(data[nl + 1 + b]) << (8 * UInt64(b)) }
            let start = nl + 9
            let end = start + Int(length)
            guard end < data.count, data[end] == 10 else { return nil }
            fields[key] = String(decoding: data[start..<end], as: UTF8.self)
            i = end + 1
        }
    }
    return fields
}

@Suite struct JournaldLogHandlerTests {
    @Test func fieldsArriveOverARealSocket() throws {
        let receiver = try DatagramReceiver()
        var logger = Logger(label: "edged.pods") { JournaldLogHandler(label: $0, socketPath: receiver.path) }
        logger[metadataKey: "pod"] = "default/web"
        logger.warning("container restarted", metadata: ["restart-count": "3"])
        let fields = try #require(receiver.receive().flatMap(parseJournalFields))
        #expect(fields["MESSAGE"] == "container restarted")
        #expect(fields["PRIORITY"] == "4")
        #expect(fields["SYSLOG_IDENTIFIER"] == "edged")
        #expect(fields["CODE_FILE"]?.hasSuffix("JournaldLogHandlerTests.swift") == true)
        #expect(Int(fields["CODE_LINE"] ?? "") != nil)
        #expect(fields["CODE_FUNC"]?.contains("fieldsArriveOverARealSocket") == true)
        #expect(fields["EDGED_POD"] == "default/web")
        #expect(fields["EDGED_RESTART_COUNT"] == "3")
        #expect(fields["EDGED_LOGGER"] == "edged.pods")
    }

    @Test func multiLineValuesUseTheBinarySafeForm() throws {
        let receiver = try DatagramReceiver()
        let logger = Logger(label: "t") { JournaldLogHandler(label: $0, socketPath: receiver.path) }
        logger.error("line one\nline two", metadata: ["detail": "a=b\nc"])
        let raw = try #require(receiver.receive())
        // The key is followed directly by a newline, then the length.
        let text = String(decoding: raw, as: UTF8.self)
        #expect(text.contains("MESSAGE\n"))
        let fields = try #require(parseJournalFields(raw))
        #expect(fields["MESSAGE"] == "line one\nline two")
        #expect(fields["EDGED_DETAIL"] == "a=b\nc")
        #expect(fields["PRIORITY"] == "3")
    }

    @Test func prioritiesAndFieldNames() {
        #expect(JournaldLogHandler.priority(.trace) == 7)
        #expect(JournaldLogHandler.priority(.debug) == 7)
        #expect(JournaldLogHandler.priority(.info) == 6)
        #expect(JournaldLogHandler.priority(.notice) == 5)
        #expect(JournaldLogHandler.priority(.critical) == 2)
        #expect(JournaldLogHandler.fieldName("image.ref-1") == "IMAGE_REF_1")
    }

    @Test func fallsBackToStderrWhenJournaldIsAway() throws {
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]) }
        let logger = Logger(label: "t") {
            JournaldLogHandler(label: $0, socketPath: "/tmp/edged-no-journal-\(getpid())/socket",
                               fallbackFileDescriptor: pipeFDs[1])
        }
        logger.error("cannot pull image", metadata: ["image": "busybox:latest"])
        close(pipeFDs[1])
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(pipeFDs[0], &buf, buf.count)
        let line = String(decoding: buf[0..<max(n, 0)], as: UTF8.self)
        #expect(line.hasPrefix("E"))
        #expect(line.contains("] cannot pull image image=busybox:latest\n"))
    }
}
