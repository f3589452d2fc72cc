// The pod network's CNI configuration, found the way kubelet and containerd (libcni) find it.

import EdgedCore
import Glibc

/// A CNI network configuration list: the network's name and version, and its plugins in chain order.
///
/// A single-plugin `.conf`/`.json` file is wrapped into a one-plugin list, as libcni's ConfListFromConf does.
public struct CNIConfig: Sendable, Equatable {
    /// The file it was read from.
    public let file: String
    public let name: String
    public let cniVersion: String
    /// Skip CHECK for this network (the list's `disableCheck`).
    public let disableCheck: Bool
    /// Each plugin's own config object, exactly as written (minus nothing): passed to the plugin with name,
    /// cniVersion, prevResult and runtimeConfig added.
    public let plugins: [JSONValue]

    /// The plugin types in chain order ("bridge", "portmap", ...).
    public var pluginTypes: [String] { plugins.map { $0["type"]?.stringValue ?? "" } }

    public init(file: String, name: String, cniVersion: String, disableCheck: Bool = false, plugins: [JSONValue]) {
        self.file = file
        self.name = name
        self.cniVersion = cniVersion
        self.disableCheck = disableCheck
        self.plugins = plugins
    }

    /// The config file names libcni considers, lexically sorted: `*.conflist`, `*.conf`, `*.json`.
    public static func candidateFiles(in confDir: String) -> [String] {
        let names = Files.list(confDir) ?? []
        return names.filter { n in
            !n.hasPrefix(".") && (n.hasSuffix(".conflist") || n.hasSuffix(".conf") || n.hasSuffix(".json"))
        }.sorted()
    }

    /// Loads the lexically first config file in `confDir`.
    ///
    /// Throws `.notReady` when there is none (kubelet reports "cni config uninitialized" and the node NotReady)
    /// and `.invalidConfig`, naming the file, when the first file is not a valid config: a broken file is
    /// reported rather than silently passed over for another network.
    public static func load(confDir: String) throws(NetworkError) -> CNIConfig {
        guard let first = candidateFiles(in: confDir).first else {
            throw NetworkError(.notReady, "no CNI network config in \(confDir): install a CNI plugin (e.g. flannel) or put a conflist there")
        }
        let path = "\(confDir)/\(first)"
        guard let text = Files.readText(path, limit: 1 << 20) else {
            throw NetworkError(.invalidConfig, "cannot read CNI network config \(path): \(String(cString: strerror(errno)))")
        }
        return try parse(text, file: path)
    }

    /// Parses a `.conflist` (a list with `plugins`) or a `.conf`/`.json` (one plugin with `type`).
    public static func parse(_ text: String, file: String) throws(NetworkError) -> CNIConfig {
        let doc: JSONValue
        do { doc = try JSONText.parse(text) } catch {
            throw NetworkError(.invalidConfig, "CNI network config \(file) is not valid JSON: \(error.message)")
        }
        guard doc.isObject else {
            throw NetworkError(.invalidConfig, "CNI network config \(file) must be a JSON object")
        }
        guard let name = doc["name"]?.stringValue, !name.isEmpty else {
            throw NetworkError(.invalidConfig, "CNI network config \(file) has no \"name\": every network config needs one")
        }
        guard let version = doc["cniVersion"]?.stringValue, !version.isEmpty else {
            throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)) has no \"cniVersion\" (e.g. \"1.0.0\")")
        }
        guard CNIVersion.isSupported(version) else {
            throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)) has cniVersion \(version), which edged does not support (use one of \(CNIVersion.supported.joined(separator: ", ")))")
        }
        let plugins: [JSONValue]
        if let list = doc["plugins"] {
            guard let items = list.arrayValue, !items.isEmpty else {
                throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)): \"plugins\" must be a non-empty list")
            }
            plugins = items
        } else if doc["type"] != nil {
            plugins = [doc]
        } else {
            throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)) has neither \"plugins\" (a .conflist) nor \"type\" (a .conf)")
        }
        for (i, p) in plugins.enumerated() {
            guard p.isObject, let type = p["type"]?.stringValue, !type.isEmpty else {
                throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)): plugins[\(i)] has no \"type\"")
            }
            guard !type.contains("/"), type != ".", type != ".." else {
                throw NetworkError(.invalidConfig, "CNI network config \(file) (network \(name)): plugins[\(i)] type \"\(type)\" must be a plain file name")
            }
        }
        return CNIConfig(file: file, name: name, cniVersion: version, disableCheck: doc["disableCheck"]?.boolValue ?? false, plugins: plugins)
    }

    /// The config as a `.conflist` document (what the result cache stores).
    var listJSON: JSONValue {
        .object([("cniVersion", .string(cniVersion)), ("name", .string(name)), ("disableCheck", .bool(disableCheck)),
                 ("plugins", .array(plugins))])
    }

    /// The document a plugin reads on stdin: its own config with the network's name and cniVersion, the
    /// previous result (chaining), and the runtime config for the capabilities the plugin declares.
    static func pluginInput(_ plugin: JSONValue, name: String, cniVersion: String, prevResult: JSONValue?,
                            runtimeConfig: [(String, JSONValue)]) -> JSONValue {
        var conf = plugin.setting("name", .string(name)).setting("cniVersion", .string(cniVersion))
        if let prevResult { conf = conf.setting("prevResult", prevResult) }
        var rc: [(String, JSONValue)] = []
        for (capability, value) in runtimeConfig where plugin["capabilities"]?[capability]?.boolValue == true {
            rc.append((capability, value))
        }
        if !rc.isEmpty { conf = conf.setting("runtimeConfig", .object(rc)) }
        return conf
    }
}

/// CNI spec versions edged speaks.
enum CNIVersion {
    static let supported = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    static func isSupported(_ v: String) -> Bool { supported.contains(v) }

    /// CHECK exists from 0.4.0 on.
    static func hasCheck(_ v: String) -> Bool { !["0.1.0", "0.2.0", "0.3.0", "0.3.1"].contains(v) }

    /// DEL gets the cached prevResult from 0.4.0 on.
    static func delHasPrevResult(_ v: String) -> Bool { hasCheck(v) }
}
