import EdgedCore
import Foundation
import Synchronization
import Testing

private func tempDir() throws -> String {
    var template = Array("/tmp/edged-crilog-test-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw EdgedError(.io, "mkdtemp") }
    return String(cString: p)
}

private func record(_ ts: String, _ stream: String, _ tag: String, _ msg: String) -> String {
    "\(ts) \(stream) \(tag) \(msg)\n"
}

private func record(tag: String = "F", msg: String) -> String {
    record("2026-11-21T23:59:59.123456789Z", "stdout", tag, msg)
}

private func append(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

private func readAll(_ path: String, _ options: CRILogOptions = CRILogOptions(), blockSize: Int = 64 * 1024,
                     malformed: (@Sendable (String) -> Void)? = nil) async throws -> String {
    var out: [UInt8] = []
    try await CRILogReader(path: path, options: options, blockSize: blockSize).read(onMalformed: malformed ?? { _ in }) { out += $0 }
    return String(decoding: out, as: UTF8.self)
}

/// Collects streamed output across tasks.
private actor Collector {
    var bytes: [UInt8] = []
    func add(_ b: [UInt8]) { bytes += b }
    var text: String { String(decoding: bytes, as: UTF8.self) }
}

@Suite struct CRILogTests {
    @Test func parsesRecords() throws {
        let r = try CRILogRecord.parse(Array("2026-11-21T23:59:59.123456789Z stderr P hello world ".utf8)[...])
        #expect(r.stream == .stderr)
        #expect(r.isPartial)
        #expect(r.message == Array("hello world ".utf8))
        #expect(r.rawTimestamp == "2026-11-21T23:59:59.123456789Z")
        #expect(r.timestamp.nanoseconds == 123_456_789)
        #expect(r.timestamp.description == "2026-11-21T23:59:59.123456789Z")
        // An empty message may end right after the tag; extra tags after ":" are allowed.
        let empty = try CRILogRecord.parse(Array("2026-11-21T23:59:59Z stdout F".utf8)[...])
        #expect(empty.message.isEmpty && !empty.isPartial)
        let tagged = try CRILogRecord.parse(Array("2026-11-21T23:59:59Z stdout F:x msg".utf8)[...])
        #expect(tagged.message == Array("msg".utf8))
        // Round trip through the writer's form.
        #expect(String(decoding: r.encoded(), as: UTF8.self) == "2026-11-21T23:59:59.123456789Z stderr P hello world \n")
    }

    @Test func timestampsParseWithOffsetsAndFractions() throws {
        let a = try #require(CRITimestamp(rfc3339: "2026-11-21T23:59:59.5Z"))
        #expect(a.nanoseconds == 500_000_000)
        let b = try #require(CRITimestamp(rfc3339: "2026-11-22T01:59:59.5+02:00"))
        #expect(a == b)
        #expect(CRITimestamp(rfc3339: "1970-01-01T00:00:00Z")?.seconds == 0)
        #expect(CRITimestamp(rfc3339: "2000-03-01T00:00:00Z")?.seconds == 951_868_800)
        #expect(CRITimestamp(seconds: 951_868_800).description == "2000-03-01T00:00:00.000000000Z")
        #expect(CRITimestamp(rfc3339: "2026-13-01T00:00:00Z") == nil)
        #expect(CRITimestamp(rfc3339: "yesterday") == nil)
        #expect(CRITimestamp(rfc3339: "2026-11-21T23:59:59.Z") == nil)
    }

    @Test func malformedLinesAreReportedNotFatal() async throws {
        for bad in ["", "garbage", "notatime stdout F x", "2026-11-21T23:59:59Z stdin F x", "2026-11-21T23:59:59Z stdout X x",
                    "2026-11-21T23:59:59Z"] {
            #expect(throws: CRILogError.self) { try CRILogRecord.parse(Array(bad.utf8)[...]) }
        }
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        append(path, record(msg: "one") + "this is not a CRI line\n" + record(msg: "two"))
        let reports = Mutex<[String]>([])
        let text = try await readAll(path, malformed: { line in reports.withLock { $0.append(line) } })
        #expect(text == "one\ntwo\n")
        #expect(reports.withLock { $0.count } == 1)
        #expect(reports.withLock { $0.first?.contains("this is not a CRI line") } == true)
    }

    @Test func partialRecordsAreMergedIntoLines() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        append(path, record("2026-01-01T00:00:01Z", "stdout", "P", "hel")
               + record("2026-01-01T00:00:02Z", "stderr", "F", "oops")
               + record("2026-01-01T00:00:03Z", "stdout", "P", "lo ")
               + record("2026-01-01T00:00:04Z", "stdout", "F", "world")
               + record("2026-01-01T00:00:05Z", "stdout", "F", ""))
        #expect(try await readAll(path) == "heloops\nlo world\n\n")
        #expect(try await readAll(path, CRILogOptions(stream: .stdout)) == "hello world\n\n")
        // The line's time is that of its first record.
        #expect(try await readAll(path, CRILogOptions(timestamps: true, stream: .stdout))
                == "2026-01-01T00:00:01Z hello world\n2026-01-01T00:00:05Z \n")
        // tail counts merged lines.
        #expect(try await readAll(path, CRILogOptions(tailLines: 2, stream: .stdout)) == "hello world\n\n")
    }

    @Test func tailAcrossRotatedFilesWithSmallBlocks() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        // 30 lines: 1–10 in c.log.2, 11–20 in c.log.1, 21–30 in c.log.
        for (file, range) in [("\(path).2", 1...10), ("\(path).1", 11...20), (path, 21...30)] {
            append(file, range.map { record(msg: "line \($0)") }.joined())
        }
        let expect = { (from: Int) in (from...30).map { "line \($0)\n" }.joined() }
        for block in [16, 37, 100, 64 * 1024] {
            #expect(try await readAll(path, CRILogOptions(tailLines: 3), blockSize: block) == expect(28))
            #expect(try await readAll(path, CRILogOptions(tailLines: 10), blockSize: block) == expect(21))
            #expect(try await readAll(path, CRILogOptions(tailLines: 11), blockSize: block) == expect(20))
            #expect(try await readAll(path, CRILogOptions(tailLines: 25), blockSize: block) == expect(6))
            #expect(try await readAll(path, CRILogOptions(tailLines: 1000), blockSize: block) == expect(1))
        }
        #expect(try await readAll(path) == expect(1))
        #expect(try await readAll(path, CRILogOptions(tailLines: 0)) == "")
        // An unfinished last line (the writer mid-record) is not shown.
        append(path, "2026-11-21T23:59:59Z stdout F half")
        #expect(try await readAll(path, CRILogOptions(tailLines: 1)) == "line 30\n")
    }

    @Test func tailOfAHugeFileReadsOnlyTheEnd() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        let line = record(msg: String(repeating: "x", count: 200))
        var chunk = ""
        for _ in 0..<1000 { chunk += line }
        for _ in 0..<50 { append(path, chunk) }  // ~11 MB
        append(path, record(msg: "last"))
        let start = ContinuousClock.now
        #expect(try await readAll(path, CRILogOptions(tailLines: 1)) == "last\n")
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test func sinceLimitBytesAndTimestamps() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        let old = CRITimestamp(seconds: CRITimestamp.now().seconds - 3600)
        let recent = CRITimestamp(seconds: CRITimestamp.now().seconds - 5)
        append(path, record(old.description, "stdout", "F", "old") + record(recent.description, "stdout", "F", "new"))
        #expect(try await readAll(path, CRILogOptions(sinceSeconds: 60)) == "new\n")
        #expect(try await readAll(path, CRILogOptions(sinceTime: old)) == "old\nnew\n")
        #expect(try await readAll(path, CRILogOptions(limitBytes: 6)) == "old\nne")
        #expect(try await readAll(path, CRILogOptions(timestamps: true, limitBytes: 1000))
                == "\(old.description) old\n\(recent.description) new\n")
        #expect(try await readAll(path, CRILogOptions(tailLines: 1, timestamps: true)) == "\(recent.description) new\n")
    }

    @Test func missingLogIsNotFound() async throws {
        await #expect(throws: EdgedError.self) { try await readAll("/tmp/edged-no-such-log-\(getpid()).log") }
    }

    @Test func followSeesAppendsAndRotation() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        append(path, record(msg: "before 1") + record(msg: "before 2"))
        let collector = Collector()
        let reader = CRILogReader(path: path, options: CRILogOptions(tailLines: 1, follow: true), pollInterval: .milliseconds(20))
        let task = Task { try await reader.read { await collector.add($0) } }
        func waitFor(_ text: String) async throws {
            for _ in 0..<200 {
                if await collector.text == text { return }
                try await Task.sleep(for: .milliseconds(10))
            }
            Issue.record("got \(await collector.text.debugDescription), want \(text.debugDescription)")
        }
        try await waitFor("before 2\n")
        append(path, record(tag: "P", msg: "grow") + record(msg: "ing"))
        try await waitFor("before 2\ngrowing\n")
        // Rotate: a last line into the old file, rename, then the new file.
        append(path, record(msg: "just before rotation"))
        #expect(rename(path, "\(path).1") == 0)
        append(path, record(msg: "after rotation"))
        try await waitFor("before 2\ngrowing\njust before rotation\nafter rotation\n")
        // Truncation in place starts over.
        #expect(truncate(path, 0) == 0)
        append(path, record(msg: "fresh"))
        try await waitFor("before 2\ngrowing\njust before rotation\nafter rotation\nfresh\n")
        task.cancel()
        try await task.value
    }

    @Test func followStopsAtTheByteLimit() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/c.log"
        append(path, record(msg: "abc"))
        let collector = Collector()
        let reader = CRILogReader(path: path, options: CRILogOptions(follow: true, limitBytes: 6), pollInterval: .milliseconds(20))
        let task = Task { try await reader.read { await collector.add($0) } }
        try await Task.sleep(for: .milliseconds(100))
        append(path, record(msg: "defgh"))
        try await task.value  // returns by itself once the limit is reached
        #expect(await collector.text == "abc\nde")
    }
}
