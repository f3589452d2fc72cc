// What the Debian package (cross/deb.sh) relies on: one version everywhere, and a default /etc/edged/config.yaml
// (cross/deb/config.yaml) that shows edged's real defaults.

@testable import EdgedDaemon
import EdgedTestSupport
import Foundation
import Testing

/// The repository root, from this file's place in it (Tests/EdgedIntegrationTests/).
private let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

private func repoFile(_ path: String) throws -> String {
    try String(contentsOfFile: "\(repoRoot)/\(path)", encoding: .utf8)
}

/// cross/deb-check.sh's rule: a setting line is "#key: value" or "#  key: value" (nested); prose is "# text".
private func uncommentingSettings(_ text: String) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> Substring in
        guard line.hasPrefix("#"), let second = line.dropFirst().first else { return line }
        if second != " " && second != "#" { return line.dropFirst() }
        if line.dropFirst().hasPrefix("  ") { return line.dropFirst() }
        return line
    }.joined(separator: "\n")
}

struct PackagingTests {
    /// Unstamped (this clone), VERSION, edged and edgectl say the same; cross/stamp-version.sh changes all three.
    @Test func versionIsTheSameInVERSIONEdgedAndEdgectl() throws {
        let version = try repoFile("VERSION").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!version.isEmpty)
        #expect(EdgedVersion.string == version, "Sources/EdgedDaemon/Version.swift differs from VERSION: run cross/stamp-version.sh . \(version)")
        let edgectl = try runCommand(["\(buildBinDir)/edgectl", "--version"])
        #expect(edgectl.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == version,
                "Sources/edgectl/Version.swift differs from VERSION: run cross/stamp-version.sh . \(version)")
        let edged = try runCommand(["\(buildBinDir)/edged", "--version"])
        #expect(edged.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == version)
    }

    /// As shipped every setting is commented out (edged runs on its defaults), and uncommenting all of them gives
    /// exactly the defaults too: the values the file shows are the ones edged uses.
    @Test func packagedConfigShowsTheRealDefaults() throws {
        let text = try repoFile("cross/deb/config.yaml")
        #expect(try EdgedConfig.parse(text, source: "config.yaml") == EdgedConfig())
        let uncommented = uncommentingSettings(text)
        #expect(uncommented != text)
        let parsed = try EdgedConfig.parse(uncommented, source: "config.yaml (uncommented)")
        #expect(parsed == EdgedConfig())
    }

    /// Every key edged knows is in the file, as a setting or as an example (`key: …`).
    @Test func packagedConfigDocumentsEveryKey() throws {
        let text = try repoFile("cross/deb/config.yaml")
        func documented(_ key: String) -> Bool {
            text.split(separator: "\n").contains { line in
                guard line.hasPrefix("#") else { return false }
                let body = line.drop { $0 == "#" || $0 == " " }
                return body.hasPrefix("\(key):") || line.contains("`\(key):") || line.contains("`  \(key):")
            }
        }
        let sections: [(String, [String])] = [
            ("", EdgedConfig.CodingKeys.allCases.map(\.rawValue)),
            ("cni.", EdgedConfig.CNISettings.CodingKeys.allCases.map(\.rawValue)),
            ("gpu.", EdgedConfig.GPUSettings.CodingKeys.allCases.map(\.rawValue)),
            ("cluster.", EdgedConfig.ClusterSettings.CodingKeys.allCases.map(\.rawValue)),
            ("hub.", EdgedConfig.HubSettings.CodingKeys.allCases.map(\.rawValue)),
            ("kubelet.", EdgedConfig.KubeletSettings.CodingKeys.allCases.map(\.rawValue)),
            ("tunnel.", EdgedConfig.TunnelSettings.CodingKeys.allCases.map(\.rawValue)),
        ]
        var missing: [String] = []
        for (prefix, keys) in sections { for key in keys where !documented(key) { missing.append(prefix + key) } }
        #expect(missing.isEmpty, "cross/deb/config.yaml does not document: \(missing.joined(separator: ", "))")
    }
}
