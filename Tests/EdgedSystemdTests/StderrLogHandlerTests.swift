import EdgedSystemd
import Foundation
import Logging
import Testing

@Suite struct StderrLogHandlerTests {
    @Test func klogFormat() throws {
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]) }
        var logger = Logger(label: "t") { StderrLogHandler(label: $0, fileDescriptor: pipeFDs[1]) }
        logger.logLevel = .debug
        logger.info("pod started", metadata: ["pod": "default/web", "note": "two words"]); let line1 = #line
        logger.warning("slow")
        logger.trace("hidden")
        close(pipeFDs[1])
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(pipeFDs[0], &buf, buf.count)
        let lines = String(decoding: buf[0..<max(n, 0)], as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        let pattern = #/^I\d{4} \d\d:\d\d:\d\d\.\d{6} (\d+) StderrLogHandlerTests\.swift:(\d+)\] pod started note="two words" pod=default/web$/#
        let match = try #require(lines[0].wholeMatch(of: pattern))
        #expect(Int32(match.1) == getpid())
        #expect(Int(match.2) == line1)
        #expect(lines[1].hasPrefix("W"))
        #expect(lines[1].hasSuffix("] slow"))
    }

    @Test func journalStreamMustMatchStderr() throws {
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        var st = stat()
        fstat(pipeFDs[1], &st)
        #expect(LoggingSetup.stderrIsJournal(journalStream: "\(st.st_dev):\(st.st_ino)", fd: pipeFDs[1]))
        #expect(!LoggingSetup.stderrIsJournal(journalStream: "\(st.st_dev):\(st.st_ino + 1)", fd: pipeFDs[1]))
        #expect(!LoggingSetup.stderrIsJournal(journalStream: nil, fd: pipeFDs[1]))
        #expect(!LoggingSetup.stderrIsJournal(journalStream: "garbage", fd: pipeFDs[1]))
    }
}
