import EdgedNetwork
import EdgedTestSupport
import Foundation
import Testing

@Suite struct CNIConfigTests {
    @Test func picksTheLexicallyFirstFileAndWrapsAConf() throws {
        let dir = try TempDir("edged-cniconf")
        defer { dir.remove() }
        try #"{"cniVersion":"0.4.0","name":"single","type":"bridge","bridge":"x0"}"#
            .write(toFile: dir.sub("10-single.conf"), atomically: true, encoding: .utf8)
        try #"{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"ptp"}]}"#
            .write(toFile: dir.sub("20-later.conflist"), atomically: true, encoding: .utf8)
        try "not considered".write(toFile: dir.sub("00-notes.txt"), atomically: true, encoding: .utf8)
        let c = try CNIConfig.load(confDir: dir.path)
        #expect(c.file == dir.sub("10-single.conf"))
        #expect(c.name == "single")
        #expect(c.cniVersion == "0.4.0")
        #expect(c.pluginTypes == ["bridge"])
        #expect(c.plugins[0]["bridge"]?.stringValue == "x0")
        #expect(CNIConfig.candidateFiles(in: dir.path) == ["10-single.conf", "20-later.conflist"])
    }

    @Test func noConfigIsNotReady() throws {
        let dir = try TempDir("edged-cniconf")
        defer { dir.remove() }
        for confDir in [dir.path, dir.sub("missing")] {
            #expect {
                _ = try CNIConfig.load(confDir: confDir)
            } throws: { error in
                let e = error as? NetworkError
                return e?.code == .notReady
                    && e?.message == "no CNI network config in \(confDir): install a CNI plugin (e.g. flannel) or put a conflist there"
            }
        }
    }

    @Test(arguments: [
        ("{not json", "is not valid JSON"),
        (#"["a"]"#, "must be a JSON object"),
        (#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#, "has no \"name\""),
        (#"{"name":"n","plugins":[{"type":"bridge"}]}"#, "has no \"cniVersion\""),
        (#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"bridge"}]}"#, "cniVersion 9.9.9"),
        (#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#, "\"plugins\" must be a non-empty list"),
        (#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"mtu":1}]}"#, "plugins[1] has no \"type\""),
        (#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../bin/sh"}]}"#, "must be a plain file name"),
        (#"{"name":"n","cniVersion":"1.0.0"}"#, "has neither \"plugins\""),
    ])
    func badFilesAreNamed(text: String, expected: String) throws {
        let dir = try TempDir("edged-cniconf")
        defer { dir.remove() }
        try text.write(toFile: dir.sub("05-bad.conflist"), atomically: true, encoding: .utf8)
        try #"{"cniVersion":"1.0.0","name":"good","plugins":[{"type":"bridge"}]}"#
            .write(toFile: dir.sub("10-good.conflist"), atomically: true, encoding: .utf8)
        #expect {
            _ = try CNIConfig.load(confDir: dir.path)
        } throws: { error in
            let e = error as? NetworkError
            return e?.code == .invalidConfig && e!.message.contains(dir.sub("05-bad.conflist")) && e!.message.contains(expected)
        }
    }

    @Test func unreadableFileIsNamed() throws {
        let dir = try TempDir("edged-cniconf")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("10-dir.conflist"), withIntermediateDirectories: true)
        #expect {
            _ = try CNIConfig.load(confDir: dir.path)
        } throws: { error in
            (error as? NetworkError)?.code == .invalidConfig && "\(error)".contains("cannot read CNI network config \(dir.sub("10-dir.conflist"))")
        }
    }
}
