// Per-pod record of what was set up: the network config used and the ADD result, so that DEL works after an
// edged restart (even when the config dir changed since) and CHECK has the previous result.

import EdgedCore
import Glibc

/// One pod's cached CNI state, stored as `<cacheDir>/<podUID>.json`.
struct CNICacheEntry: Sendable, Equatable {
    var podUID: String
    var namespace: String
    var name: String
    var containerID: String
    var netns: String
    var ifName: String
    var config: CNIConfig
    /// The runtime config given at ADD (portMappings), passed again at DEL and CHECK.
    var runtimeConfig: [(String, JSONValue)]
    /// nil while ADD is in progress (written first, so a crash mid-ADD still leaves enough to DEL).
    var result: CNIResult?

    static func == (a: CNICacheEntry, b: CNICacheEntry) -> Bool {
        a.json == b.json
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("kind", .string("edgedCNICache")), ("version", .number("1")),
            ("podUID", .string(podUID)), ("namespace", .string(namespace)), ("name", .string(name)),
            ("containerID", .string(containerID)), ("netns", .string(netns)), ("ifName", .string(ifName)),
            ("configFile", .string(config.file)), ("config", config.listJSON),
            ("runtimeConfig", .object(runtimeConfig)),
        ]
        if let result { members.append(("result", result.raw)) }
        return .object(members)
    }

    init(podUID: String, namespace: String, name: String, containerID: String, netns: String, ifName: String,
         config: CNIConfig, runtimeConfig: [(String, JSONValue)], result: CNIResult?) {
        self.podUID = podUID
        self.namespace = namespace
        self.name = name
        self.containerID = containerID
        self.netns = netns
        self.ifName = ifName
        self.config = config
        self.runtimeConfig = runtimeConfig
        self.result = result
    }

    init(json doc: JSONValue, file: String) throws(NetworkError) {
        guard doc["kind"]?.stringValue == "edgedCNICache", let podUID = doc["podUID"]?.stringValue,
              let containerID = doc["containerID"]?.stringValue, let config = doc["config"] else {
            throw NetworkError(.io, "CNI cache file \(file) is not an edged CNI cache entry: remove it")
        }
        let configFile = doc["configFile"]?.stringValue ?? file
        self.podUID = podUID
        namespace = doc["namespace"]?.stringValue ?? ""
        name = doc["name"]?.stringValue ?? ""
        self.containerID = containerID
        netns = doc["netns"]?.stringValue ?? ""
        ifName = doc["ifName"]?.stringValue ?? "eth0"
        self.config = try CNIConfig.parse(config.jsonText, file: configFile)
        if case .object(let rc) = doc["runtimeConfig"] ?? .null { runtimeConfig = rc } else { runtimeConfig = [] }
        if let r = doc["result"] { result = try CNIResult.parse(r, plugin: "cache") } else { result = nil }
    }
}

/// The on-disk cache: one file per pod, replaced atomically (write to a temp file, fsync, rename, fsync the dir).
struct CNIResultCache: Sendable {
    let dir: String

    func path(_ podUID: String) -> String { "\(dir)/\(podUID).json" }

    func write(_ entry: CNICacheEntry) throws(NetworkError) {
        guard Files.makeDirectories(dir, mode: 0o700) else {
            throw NetworkError(.io, "cannot create the CNI cache dir \(dir): \(String(cString: strerror(errno)))")
        }
        do { try Files.writeAtomically(path(entry.podUID), Array(entry.json.jsonText.utf8), mode: 0o600) } catch {
            throw NetworkError(.io, error.message)
        }
    }

    /// The pod's entry; nil when there is none. Throws when the file exists but cannot be used.
    func read(_ podUID: String) throws(NetworkError) -> CNICacheEntry? {
        let p = path(podUID)
        guard let bytes = Files.read(p, limit: 4 << 20) else {
            if errno == ENOENT { return nil }
            throw NetworkError(.io, "cannot read CNI cache file \(p): \(String(cString: strerror(errno)))")
        }
        let doc: JSONValue
        do { doc = try JSONText.parse(bytes) } catch {
            throw NetworkError(.io, "CNI cache file \(p) is damaged (\(error.message)): remove it")
        }
        return try CNICacheEntry(json: doc, file: p)
    }

    func remove(_ podUID: String) {
        unlink(path(podUID))
    }

    /// The pod UIDs with an entry.
    func podUIDs() -> [String] {
        (Files.list(dir) ?? []).filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }
}
