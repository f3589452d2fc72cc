// Rules the static binaries (cross/build.sh) need that a test of the dynamic debug build cannot see by running.

import Foundation
import Testing

@Suite struct StaticBinaryRulesTests {
    /// dlsym(RTLD_DEFAULT, …) finds nothing in a static executable, so a function looked up that way is silently
    /// missing from the shipped binaries (closefrom, pidfd_open and setns once were: the monitors then kept edged's
    /// ports bound and port-forward failed with ENOSYS). GNU calls go through Sources/CLinux instead.
    @Test func noSourceLooksUpFunctionsWithDlsym() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") || $0.hasSuffix(".c") || $0.hasSuffix(".h") }
        #expect(files.count > 50, "expected edged's sources below \(sources.path)")
        var found: [String] = []
        for f in files {
            let text = try String(contentsOfFile: sources.appendingPathComponent(f).path, encoding: .utf8)
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where line.contains("dlsym(") || line.contains("dlopen(") {
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                if code.contains("dlsym(") || code.contains("dlopen(") { found.append("Sources/\(f):\(i + 1)") }
            }
        }
        #expect(found.isEmpty, "dlsym/dlopen finds nothing in the static binaries; call the function through Sources/CLinux: \(found)")
    }
}
