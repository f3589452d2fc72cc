// Container log files in the CRI format: parsing records, and reading them back the way kubelet's
// containerLogs endpoint does (tail, since, limitBytes, timestamps, follow across rotation).
//
// One record per line: `2026-11-21T23:59:59.123456789Z stdout F message`. The tag is `F` when the record ends a
// line and `P` when the line goes on in the next record of the same stream. The writer rotates by renaming
// `path` → `path.1` → `path.2` … and starting a fresh `path`, so the oldest lines are in the highest number.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Which output stream of a container a record came from.
public enum CRILogStream: String, Sendable, Codable, Hashable {
    case stdout
    case stderr
}

/// A wall-clock instant with nanosecond precision, as written in CRI log records (RFC 3339).
public struct CRITimestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Seconds since the Unix epoch (UTC).
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// The current wall-clock time.
    public static func now() -> CRITimestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return CRITimestamp(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }

    public static func < (a: CRITimestamp, b: CRITimestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    /// Parses RFC 3339 (`2026-11-21T23:59:59.123456789Z`, any number of fraction digits, `Z` or `±hh:mm`).
    public init?(rfc3339 text: some StringProtocol) {
        self.init(rfc3339Bytes: Array(text.utf8)[...])
    }

    /// Parses RFC 3339 from raw bytes; nil when it is not a valid timestamp.
    public init?(rfc3339Bytes b: ArraySlice<UInt8>) {
        var i = b.startIndex
        func number(_ digits: Int) -> Int64? {
            guard b.endIndex - i >= digits else { return nil }
            var v: Int64 = 0
            for _ in 0..<digits {
                let c = b[i]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
                i += 1
            }
            return v
        }
        func expect(_ c: UInt8...) -> Bool {
            guard i < b.endIndex, c.contains(b[i]) else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect(45), let month = number(2), expect(45), let day = number(2),
              expect(84, 116, 32), let hour = number(2), expect(58), let minute = number(2), expect(58),
              let second = number(2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var nanos: Int64 = 0
        if i < b.endIndex, b[i] == 46 {  // "."
            i += 1
            var digits = 0
            while i < b.endIndex, b[i] >= 48, b[i] <= 57 {
                if digits < 9 { nanos = nanos * 10 + Int64(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(9, digits) { nanos *= 10 }
        }
        var offset: Int64 = 0
        guard i < b.endIndex else { return nil }
        if b[i] == 90 || b[i] == 122 {  // "Z" / "z"
            i += 1
        } else if b[i] == 43 || b[i] == 45 {  // "+" / "-"
            let sign: Int64 = b[i] == 45 ? -1 : 1
            i += 1
            guard let oh = number(2), expect(58), let om = number(2) else { return nil }
            offset = sign * (oh * 3600 + om * 60)
        } else {
            return nil
        }
        guard i == b.endIndex else { return nil }
        let days = CRITimestamp.daysFromCivil(year: year, month: month, day: day)
        seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
        nanoseconds = Int32(nanos)
    }

    /// RFC3339 with nine fraction digits in UTC (`2026-11-21T23:59:59.123456789Z`), the form the log writer uses.
    public var description: String {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let rem = seconds - days * 86400
        let (y, m, d) = CRITimestamp.civilFromDays(days)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem / 60 % 60, 2)):\(pad(rem % 60, 2))"
            + ".\(pad(Int64(nanoseconds), 9))Z"
    }

    // Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian calendar).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civilFromDays(_ z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}

/// Why a line of a log file is not a CRI record.
public struct CRILogError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One line of a CRI log file.
public struct CRILogRecord: Sendable, Equatable {
    public var timestamp: CRITimestamp
    /// The timestamp exactly as written, for `--timestamps` output.
    public var rawTimestamp: String
    public var stream: CRILogStream
    /// True for a `P` record: the line continues in the next record of this stream.
    public var isPartial: Bool
    /// The message bytes, without the line's trailing newline.
    public var message: [UInt8]

    public init(timestamp: CRITimestamp, stream: CRILogStream, isPartial: Bool, message: [UInt8]) {
        self.timestamp = timestamp
        self.rawTimestamp = timestamp.description
        self.stream = stream
        self.isPartial = isPartial
        self.message = message
    }

    /// Parses one line (without its `\n`). Throws a `CRILogError` naming what is wrong; never traps.
    public static func parse(_ line: ArraySlice<UInt8>) throws(CRILogError) -> CRILogRecord {
        guard let s1 = line.firstIndex(of: 32) else { throw CRILogError("no space after the timestamp") }
        guard let ts = CRITimestamp(rfc3339Bytes: line[line.startIndex..<s1]) else {
            throw CRILogError("invalid timestamp \"\(String(decoding: line[line.startIndex..<s1].prefix(40), as: UTF8.self))\"")
        }
        let rest = line[(s1 + 1)...]
        guard let s2 = rest.firstIndex(of: 32) else { throw CRILogError("no space after the stream") }
        let streamText = String(decoding: rest[rest.startIndex..<s2], as: UTF8.self)
        guard let stream = CRILogStream(rawValue: streamText) else {
            throw CRILogError("invalid stream \"\(streamText.prefix(20))\" (want stdout or stderr)")
        }
        // The tag field may hold several ":"-separated tags; the first is P or F. The message may be empty
        // (then the line may end right after the tag).
        let afterStream = rest[(s2 + 1)...]
        let s3 = afterStream.firstIndex(of: 32) ?? afterStream.endIndex
        let tags = afterStream[afterStream.startIndex..<s3]
        let first = tags.split(separator: 58, maxSplits: 1, omittingEmptySubsequences: false).first ?? []
        let partial: Bool
        if first.elementsEqual([70]) { partial = false } else if first.elementsEqual([80]) { partial = true } else {
            throw CRILogError("invalid tag \"\(String(decoding: tags.prefix(20), as: UTF8.self))\" (want F or P)")
        }
        let message = s3 < afterStream.endIndex ? Array(afterStream[(s3 + 1)...]) : []
        var record = CRILogRecord(timestamp: ts, stream: stream, isPartial: partial, message: message)
        record.rawTimestamp = String(decoding: line[line.startIndex..<s1], as: UTF8.self)
        return record
    }

    /// The record as one line of a log file, with its trailing newline.
    public func encoded() -> [UInt8] {
        var out = Array(rawTimestamp.utf8)
        out.append(32)
        out += stream.rawValue.utf8
        out += isPartial ? [32, 80, 32] : [32, 70, 32]
        out += message
        out.append(10)
        return out
    }
}

/// What to read, with the meaning of kubelet's containerLogs query parameters.
public struct CRILogOptions: Sendable, Equatable {
    /// Only the last N lines (partial records merged into lines); nil = all.
    public var tailLines: Int?
    /// Keep reading as the file grows and rotates, until the task is cancelled or the sink throws.
    public var follow: Bool
    /// Only lines written in the last N seconds (relative to when reading starts).
    public var sinceSeconds: Int64?
    /// Only lines written at or after this time. `sinceSeconds` wins when both are set.
    public var sinceTime: CRITimestamp?
    /// Prefix each line with its RFC3339Nano time and a space, like `kubectl logs --timestamps`.
    public var timestamps: Bool
    /// Stop after this many bytes of output (possibly in the middle of a line).
    public var limitBytes: Int?
    /// Only this stream; nil = both.
    public var stream: CRILogStream?

    public init(tailLines: Int? = nil, follow: Bool = false, sinceSeconds: Int64? = nil, sinceTime: CRITimestamp? = nil,
                timestamps: Bool = false, limitBytes: Int? = nil, stream: CRILogStream? = nil) {
        self.tailLines = tailLines
        self.follow = follow
        self.sinceSeconds = sinceSeconds
        self.sinceTime = sinceTime
        self.timestamps = timestamps
        self.limitBytes = limitBytes
        self.stream = stream
    }
}

/// Reads the messages of a CRI log file (and its rotated predecessors) as plain text.
///
/// Partial records are joined into lines as they stream: a `P` record's message is written without a newline and
/// the line's timestamp prefix is written only before its first record. Nothing is read whole into memory: tail
/// scans backwards in blocks, and the rest is read forwards in blocks.
public struct CRILogReader: Sendable {
    public let path: String
    public var options: CRILogOptions
    /// How often follow mode looks for growth and rotation.
    public var pollInterval: Duration
    /// Size of each read.
    public var blockSize: Int

    public init(path: String, options: CRILogOptions = CRILogOptions(), pollInterval: Duration = .milliseconds(150),
                blockSize: Int = 64 * 1024) {
        self.path = path
        self.options = options
        self.pollInterval = pollInterval
        self.blockSize = max(blockSize, 16)
    }

    /// The files holding this log, oldest first (`path.N` … `path.1`, `path`); only those that exist.
    public func files() -> [String] {
        var rotated: [String] = []
        var n = 1
        while n <= 1000, CRILogReader.fileExists("\(path).\(n)") {
            rotated.append("\(path).\(n)")
            n += 1
        }
        var all = Array(rotated.reversed())
        if CRILogReader.fileExists(path) { all.append(path) }
        return all
    }

    /// Writes the selected output to `sink` in chunks and returns when done: at the end of the files, or in follow
    /// mode when the task is cancelled. Errors thrown by `sink` (the client went away) end reading and propagate.
    /// `onMalformed` is told of each line that is not a CRI record; such lines are skipped.
    ///
    /// - Throws: `EdgedError(.notFound)` when there is no log file at all, `.io` when one cannot be read.
    public func read(onMalformed: (String) -> Void = { _ in },
                     to sink: ([UInt8]) async throws -> Void) async throws {
        let files = files()
        guard !files.isEmpty else { throw EdgedError(.notFound, "no log file at \(path)") }
        var emitter = Emitter(options: options)
        if let s = options.sinceSeconds {
            emitter.since = CRITimestamp(seconds: CRITimestamp.now().seconds - s, nanoseconds: CRITimestamp.now().nanoseconds)
        }
        var (startFile, startOffset) = (0, Int64(0))
        if let tail = options.tailLines {
            if tail <= 0 {
                (startFile, startOffset) = (files.count - 1, CRILogReader.size(files[files.count - 1]) ?? 0)
            } else {
                (startFile, startOffset) = try tailStart(files: files, lines: tail)
            }
        }
        // Older files: read to their end.
        var current = try OpenFile(path: files[startFile], blockSize: blockSize)
        current.offset = startOffset
        var index = startFile
        while true {
            let done = try await drain(&current, &emitter, onMalformed, sink)
            if done { current.close(); return }
            if index == files.count - 1 { break }
            current.close()
            index += 1
            current = try OpenFile(path: files[index], blockSize: blockSize)
        }
        guard options.follow else { current.close(); return }
        defer { current.close() }
        // Follow the newest file: poll for growth; a new inode at `path` means it was rotated.
        while !Task.isCancelled {
            do { try await Task.sleep(for: pollInterval) } catch { return }
            if try await drain(&current, &emitter, onMalformed, sink) { return }
            guard let (inode, size) = CRILogReader.statFile(path) else { continue }  // between rename and create
            if inode != current.inode {
                // Rotated: what was written before the rename is still in the old file.
                if try await drain(&current, &emitter, onMalformed, sink) { return }
                current.close()
                guard let next = try? OpenFile(path: path, blockSize: blockSize) else { continue }
                current = next
                if try await drain(&current, &emitter, onMalformed, sink) { return }
            } else if size < current.offset {
                // Truncated in place: start over.
                current.offset = 0
                current.leftover = []
            }
        }
    }

    /// Reads `file` from its offset to its current end; true when the byte limit has been reached.
    private func drain(_ file: inout OpenFile, _ emitter: inout Emitter, _ onMalformed: (String) -> Void,
                       _ sink: ([UInt8]) async throws -> Void) async throws -> Bool {
        while true {
            let got = try file.readBlock()
            if got == 0 { return false }
            var lineStart = file.leftover.startIndex
            let buffer = file.leftover
            while let nl = buffer[lineStart...].firstIndex(of: 10) {
                emitter.feed(buffer[lineStart..<nl], onMalformed)
                lineStart = nl + 1
                if emitter.limitReached { break }
            }
            file.leftover = Array(buffer[lineStart...])
            if !emitter.output.isEmpty {
                let out = emitter.output
                emitter.output = []
                try await sink(out)
            }
            if emitter.limitReached { return true }
        }
    }

    /// Finds where the last `lines` lines start, scanning the files backwards in blocks.
    private func tailStart(files: [String], lines: Int) throws -> (Int, Int64) {
        var seen = 0
        var first = true
        for index in stride(from: files.count - 1, through: 0, by: -1) {
            let fd = open(files[index], O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            var end = Int64(st.st_size)
            // Ignore an unterminated last line (the writer is in the middle of it).
            var tailBytes: [UInt8] = []  // the part of a line that continues into the next block (towards the end)
            var pos = end
            var endKnown = false
            var block = [UInt8](repeating: 0, count: blockSize)
            while pos > 0 {
                let n = Int(min(Int64(blockSize), pos))
                pos -= Int64(n)
                let got = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(pos)) }
                guard got == n else { throw EdgedError(.io, "reading \(files[index]): \(String(cString: strerror(errno)))") }
                var chunk = Array(block[0..<n]) + tailBytes
                if !endKnown {
                    guard let lastNL = chunk.lastIndex(of: 10) else { tailBytes = chunk; continue }
                    end = pos + Int64(lastNL) + 1
                    chunk = Array(chunk[..<(lastNL + 1)])
                    endKnown = true
                }
                // Lines in this chunk, walking backwards; the first (incomplete) piece is kept for the next block.
                var lineEnd = chunk.count - 1  // index of a "\n"
                while let nl = chunk[..<lineEnd].lastIndex(of: 10) {
                    if count(line: chunk[(nl + 1)..<lineEnd], seen: &seen, first: &first, want: lines) {
                        return (index, pos + Int64(lineEnd) + 1)
                    }
                    lineEnd = nl
                }
                tailBytes = Array(chunk[..<(lineEnd + 1)])
            }
            // The first line of the file.
            if endKnown, let nl = tailBytes.lastIndex(of: 10) {
                if count(line: tailBytes[..<nl], seen: &seen, first: &first, want: lines) {
                    return (index, Int64(nl) + 1)
                }
            }
        }
        return (0, 0)
    }

    /// Counts one record met while scanning backwards; true when the wanted lines all lie after it.
    /// Malformed records and other streams' records are not lines of the output, so they do not count.
    private func count(line: ArraySlice<UInt8>, seen: inout Int, first: inout Bool, want: Int) -> Bool {
        guard let record = try? CRILogRecord.parse(line) else { return false }
        if let only = options.stream, record.stream != only { return false }
        defer { first = false }
        if record.isPartial {
            if first { seen += 1 }  // an unfinished last line counts as a line
            return false
        }
        if seen == want { return true }
        seen += 1
        return false
    }

    static func fileExists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    static func size(_ path: String) -> Int64? {
        statFile(path)?.1
    }

    static func statFile(_ path: String) -> (UInt64, Int64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_ino), Int64(st.st_size))
    }
}

/// An open log file read forwards in blocks.
private struct OpenFile {
    let path: String
    let fd: Int32
    let inode: UInt64
    var offset: Int64 = 0
    /// Bytes read but not yet consumed (an unterminated line), followed by the latest block.
    var leftover: [UInt8] = []
    let blockSize: Int

    init(path: String, blockSize: Int) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw EdgedError(errno == ENOENT ? .notFound : .io, "opening \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        fstat(fd, &st)
        self.path = path
        self.fd = fd
        self.inode = UInt64(st.st_ino)
        self.blockSize = blockSize
    }

    /// Appends the next block to `leftover`; returns how many bytes were read (0 at the end).
    mutating func readBlock() throws -> Int {
        var block = [UInt8](repeating: 0, count: blockSize)
        let got = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, blockSize, off_t(offset)) }
        guard got >= 0 else { throw EdgedError(.io, "reading \(path): \(String(cString: strerror(errno)))") }
        offset += Int64(got)
        leftover += block[0..<got]
        return got
    }

    func close() {
        closeDescriptor(fd)
    }
}

private func closeDescriptor(_ fd: Int32) { _ = close(fd) }

/// Turns records into output bytes: filters, line joining, timestamps, the byte limit.
private struct Emitter {
    let options: CRILogOptions
    var since: CRITimestamp?
    var output: [UInt8] = []
    var emitted = 0
    var limitReached = false
    /// Per stream: whether a line is open (a `P` record was written) and whether that line is being skipped.
    var open: [CRILogStream: Bool] = [:]
    var skipping: [CRILogStream: Bool] = [:]

    init(options: CRILogOptions) {
        self.options = options
        self.since = options.sinceTime
    }

    mutating func feed(_ line: ArraySlice<UInt8>, _ onMalformed: (String) -> Void) {
        let record: CRILogRecord
        do {
            record = try CRILogRecord.parse(line)
        } catch {
            onMalformed("\(error.message): \(String(decoding: line.prefix(200), as: UTF8.self))")
            return
        }
        if let only = options.stream, record.stream != only { return }
        let lineOpen = open[record.stream] ?? false
        if !lineOpen {
            // The first record of a line decides whether the line is shown.
            skipping[record.stream] = since.map { record.timestamp < $0 } ?? false
        }
        open[record.stream] = record.isPartial
        if skipping[record.stream] == true { return }
        if !lineOpen && options.timestamps {
            write(Array(record.rawTimestamp.utf8) + [32])
        }
        write(record.message)
        if !record.isPartial { write([10]) }
    }

    private mutating func write(_ bytes: [UInt8]) {
        guard !limitReached else { return }
        if let limit = options.limitBytes, emitted + bytes.count >= limit {
            output += bytes.prefix(limit - emitted)
            emitted = limit
            limitReached = true
            return
        }
        output += bytes
        emitted += bytes.count
    }
}
