// A small mutation fuzzer for the parsers that take input from outside: seeds are mutated (bit flips, byte
// replacement, deletion, duplication, truncation, splicing, dictionary tokens) and each input must produce a value or
// a thrown error: no crash, no hang.
//
// CI runs every target for EDGED_FUZZ_SECONDS (default 1 s; EDGED_SOAK=1 makes it 600 s). Before each input is run
// it is written to /tmp/edged-fuzz-<target>.current, so after a crash (which takes the test process down) the
// input that did it is there: copy it to Tests/EdgedFuzzTests/Crashers/<target>/ and it is replayed on every run.
// EDGED_FUZZ_SEED replays a run.

import EdgedTestSupport
import Foundation
import Testing

struct FuzzTarget: Sendable {
    let name: String
    let seeds: [[UInt8]]
    /// Tokens worth inserting (keywords, delimiters, odd numbers).
    let dictionary: [[UInt8]]
    /// Whether inputs are JSON documents (then half the mutations change one node of the parsed document).
    let json: Bool
    /// Must return normally or throw; anything slower than `hangLimit` counts as a hang.
    let body: @Sendable ([UInt8]) throws -> Void

    init(name: String, json: Bool = false, seeds: [[UInt8]], dictionary: [[UInt8]],
         _ body: @escaping @Sendable ([UInt8]) throws -> Void) {
        self.name = name
        self.json = json
        self.seeds = seeds
        self.dictionary = dictionary
        self.body = body
    }
}

struct FuzzReport: CustomStringConvertible {
    var target: String
    var inputs = 0
    var errors = 0
    var seconds = 0.0
    var replayed = 0
    var slowest = 0.0
    var seed: UInt64 = 0
    var description: String {
        "fuzz \(target): \(inputs) inputs in \(String(format: "%.1f", seconds)) s (\(errors) rejected with an error), \(replayed) corpus/crasher files replayed, slowest \(String(format: "%.1f", slowest * 1000)) ms, seed \(seed)"
    }
}

enum Fuzz {
    static let hangLimit = 2.0

    static var seconds: Double {
        let env = ProcessInfo.processInfo.environment
        if let s = env["EDGED_FUZZ_SECONDS"].flatMap(Double.init) { return s }
        return env["EDGED_SOAK"] == "1" ? 600 : 1
    }

    static var crasherRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Crashers")
    }

    /// Replays the target's saved crashers, then fuzzes it for `seconds`; records a test issue for every input that
    /// takes longer than the hang limit (and saves it).
    static func run(_ target: FuzzTarget, seconds: Double = Fuzz.seconds) -> FuzzReport {
        var report = FuzzReport(target: target.name)
        let current = "/tmp/edged-fuzz-\(target.name).current"
        func once(_ input: [UInt8]) {
            FileManager.default.createFile(atPath: current, contents: Data(input))
            let start = Date()
            do { try target.body(input) } catch { report.errors += 1 }
            let took = Date().timeIntervalSince(start)
            report.slowest = max(report.slowest, took)
            report.inputs += 1
            if took > hangLimit {
                let saved = save(input, target: target.name, kind: "slow")
                Issue.record("fuzz \(target.name): an input took \(String(format: "%.1f", took)) s (limit \(hangLimit) s); saved as \(saved)")
            }
        }
        // Saved crashers and slow inputs first: they must stay fixed.
        let dir = crasherRoot.appendingPathComponent(target.name)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.sorted() ?? [] {
            if let data = FileManager.default.contents(atPath: dir.appendingPathComponent(file).path) {
                once(Array(data))
                report.replayed += 1
            }
        }
        for seed in target.seeds { once(seed) }

        let env = ProcessInfo.processInfo.environment
        report.seed = env["EDGED_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
        var rng = SeededRNG(state: report.seed)
        let deadline = Date().addingTimeInterval(seconds)
        let start = Date()
        var pool = target.seeds.filter { !$0.isEmpty }
        if pool.isEmpty { pool = [[0]] }
        while Date() < deadline {
            // One mutation half the time (to get past the first checks), else a few stacked; of a seed or a kept mutant.
            var input = pool[Int(rng.next() % UInt64(pool.count))]
            for _ in 0..<(rng.next() % 2 == 0 ? 1 : 2 + Int(rng.next() % 3)) { mutate(&input, target: target, pool: pool, rng: &rng) }
            once(input)
            if rng.next() % 64 == 0 && pool.count < 256 && input.count < 1 << 16 { pool.append(input) }
        }
        report.seconds = Date().timeIntervalSince(start)
        try? FileManager.default.removeItem(atPath: current)
        return report
    }

    static func mutate(_ input: inout [UInt8], target: FuzzTarget, pool: [[UInt8]], rng: inout SeededRNG) {
        func index(_ count: Int) -> Int { count == 0 ? 0 : Int(rng.next() % UInt64(count)) }
        if target.json && rng.next() % 2 == 0, let changed = JSONMutator.mutate(input, rng: &rng) {
            input = changed
            return
        }
        let interesting: [UInt8] = [0, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x0A, 0x3A, 0x7B, 0x7D, 0x5B, 0x5D, 0x2D, 0x30, 0x39]
        switch rng.next() % 9 {
        case 0 where !input.isEmpty:
            input[index(input.count)] ^= UInt8(1 << (rng.next() % 8))
        case 1 where !input.isEmpty:
            input[index(input.count)] = interesting[index(interesting.count)]
        case 2 where !input.isEmpty:
            let at = index(input.count)
            input.removeSubrange(at..<min(input.count, at + 1 + index(16)))
        case 3 where !input.isEmpty:
            let at = index(input.count)
            let chunk = input[at..<min(input.count, at + 1 + index(64))]
            input.insert(contentsOf: chunk, at: index(input.count + 1))
        case 4 where !input.isEmpty:
            input.removeLast(index(input.count))
        case 5:
            let other = pool[index(pool.count)]
            guard !other.isEmpty else { return }
            let from = index(other.count)
            input.insert(contentsOf: other[from..<min(other.count, from + 1 + index(128))], at: index(input.count + 1))
        case 6 where !target.dictionary.isEmpty:
            input.insert(contentsOf: target.dictionary[index(target.dictionary.count)], at: index(input.count + 1))
        case 7:
            // A long run: nesting and size limits.
            let byte = interesting[index(interesting.count)]
            input.insert(contentsOf: [UInt8](repeating: byte, count: 1 + index(4096)), at: index(input.count + 1))
        default:
            if !input.isEmpty { input[index(input.count)] = UInt8(truncatingIfNeeded: rng.next()) }
        }
    }

    @discardableResult
    static func save(_ input: [UInt8], target: String, kind: String) -> String {
        let dir = crasherRoot.appendingPathComponent(target)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in input { hash = (hash ^ UInt64(b)) &* 0x100_0000_01B3 }
        let file = dir.appendingPathComponent("\(kind)-\(String(hash, radix: 16))")
        FileManager.default.createFile(atPath: file.path, contents: Data(input))
        return file.path
    }
}
