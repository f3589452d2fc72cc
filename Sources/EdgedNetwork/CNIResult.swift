// A CNI plugin's ADD result: the pod's addresses and interfaces.

import EdgedCore

/// The parts of a CNI result edged uses, plus the raw JSON (chained to the next plugin and cached for DEL/CHECK).
///
/// Reads 0.3.x/0.4.0/1.x results (`ips` with `address` CIDRs and an optional `interface` index) and 0.1/0.2
/// results (`ip4`/`ip6` objects with `ip` CIDRs).
public struct CNIResult: Sendable, Equatable {
    public struct IPConfig: Sendable, Equatable {
        /// "10.250.1.2/24".
        public var address: String
        public var gateway: String?
        /// Index into `interfaces`.
        public var interface: Int?
        /// The address without its prefix length: "10.250.1.2".
        public var ip: String { String(address.split(separator: "/").first ?? "") }
    }

    public struct Interface: Sendable, Equatable {
        public var name: String
        public var mac: String?
        /// The netns path when the interface is inside the pod, nil for host-side ones (bridge, veth).
        public var sandbox: String?
    }

    public var cniVersion: String?
    public var ips: [IPConfig]
    public var interfaces: [Interface]
    public var raw: JSONValue

    /// Parses a plugin's stdout. Throws `.invalidResult` naming `plugin` for text that is not a result object.
    public static func parse(_ bytes: [UInt8], plugin: String) throws(NetworkError) -> CNIResult {
        let doc: JSONValue
        do { doc = try JSONText.parse(bytes) } catch {
            throw NetworkError(.invalidResult, "CNI plugin \(plugin) returned a result that is not JSON: \(error.message)", plugin: plugin)
        }
        return try parse(doc, plugin: plugin)
    }

    public static func parse(_ doc: JSONValue, plugin: String) throws(NetworkError) -> CNIResult {
        guard doc.isObject else {
            throw NetworkError(.invalidResult, "CNI plugin \(plugin) returned a result that is not a JSON object", plugin: plugin)
        }
        var ips: [IPConfig] = []
        for item in doc["ips"]?.arrayValue ?? [] {
            guard let address = item["address"]?.stringValue, address.contains("/") else {
                throw NetworkError(.invalidResult, "CNI plugin \(plugin) returned an ips entry without an address CIDR", plugin: plugin)
            }
            ips.append(IPConfig(address: address, gateway: item["gateway"]?.stringValue, interface: item["interface"]?.intValue))
        }
        for key in ["ip4", "ip6"] {
            guard let item = doc[key] else { continue }
            guard let address = item["ip"]?.stringValue, address.contains("/") else {
                throw NetworkError(.invalidResult, "CNI plugin \(plugin) returned \(key) without an ip CIDR", plugin: plugin)
            }
            ips.append(IPConfig(address: address, gateway: item["gateway"]?.stringValue, interface: nil))
        }
        let interfaces = (doc["interfaces"]?.arrayValue ?? []).map { i in
            Interface(name: i["name"]?.stringValue ?? "", mac: i["mac"]?.stringValue, sandbox: i["sandbox"]?.stringValue)
        }
        return CNIResult(cniVersion: doc["cniVersion"]?.stringValue, ips: ips, interfaces: interfaces, raw: doc)
    }

    /// The pod's IPs (IPv4 first, like kubelet's status.podIPs), without prefix lengths. Addresses on host-side
    /// interfaces are left out.
    public var podIPs: [String] {
        let inPod = ips.filter { ip in
            guard let idx = ip.interface, idx >= 0, idx < interfaces.count else { return true }
            return interfaces[idx].sandbox != nil
        }
        let all = inPod.map(\.ip)
        return all.filter { !$0.contains(":") } + all.filter { $0.contains(":") }
    }
}

/// An error result a plugin prints: `{"cniVersion", "code", "msg", "details"}`.
struct CNIErrorResult {
    var code: Int
    var msg: String
    var details: String?

    init?(_ bytes: [UInt8]) {
        guard let doc = try? JSONText.parse(bytes), let code = doc["code"]?.intValue else { return nil }
        self.code = code
        msg = doc["msg"]?.stringValue ?? ""
        details = doc["details"]?.stringValue
    }

    var text: String {
        let d = (details ?? "").isEmpty ? "" : " (\(details!))"
        return "\(msg.isEmpty ? "error" : msg)\(d) [CNI error code \(code)]"
    }
}
