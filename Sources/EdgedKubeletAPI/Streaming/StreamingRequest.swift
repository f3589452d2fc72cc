// The exec, attach and port-forward requests of the kubelet API, as kube-apiserver (and kubectl through it) sends them.
import EdgedCore

/// Which standard streams an exec or attach asks for.
public struct StreamFlags: Sendable, Equatable {
    public var stdin: Bool
    public var stdout: Bool
    public var stderr: Bool
    public var tty: Bool

    public init(stdin: Bool = false, stdout: Bool = false, stderr: Bool = false, tty: Bool = false) {
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
    }
}

/// A malformed streaming request (the API answers 400 with `message`).
public struct StreamingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An `/exec`, `/attach` or `/portForward` request.
public enum StreamingRequest: Sendable, Equatable {
    case exec(ContainerRef, command: [String], streams: StreamFlags)
    case attach(ContainerRef, streams: StreamFlags)
    case portForward(namespace: String, pod: String, uid: String?, ports: [UInt16])

    /// nil when `path` is not /exec, /attach or /portForward; throws `StreamingError` (→ 400, message) when it is
    /// but is malformed (no command, bad port...). `query` is the raw query string after '?'.
    ///
    /// Stream flags are read under both names in use: kube-apiserver sends kubelets `input`, `output`, `error`
    /// (and `tty`); the pod subresource spelling `stdin`, `stdout`, `stderr` is accepted too. "1" and "true" are true.
    public static func parse(path: String, query: String) throws -> StreamingRequest? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map { percentDecode(String($0)) }
        guard let kind = parts.first, kind == "exec" || kind == "attach" || kind == "portForward" else { return nil }
        let params = parseQuery(query)
        func values(_ name: String) -> [String] { params.filter { $0.0 == name }.map(\.1) }
        func flag(_ names: String...) -> Bool {
            names.contains { name in values(name).contains { $0 == "1" || $0.lowercased() == "true" } }
        }
        let args = Array(parts.dropFirst())
        if kind == "portForward" {
            guard args.count == 2 || args.count == 3 else {
                throw StreamingError("malformed port-forward path \(path): want /portForward/{namespace}/{pod}[/{uid}]")
            }
            var ports: [UInt16] = []
            for raw in values("port") {
                for item in raw.split(separator: ",", omittingEmptySubsequences: false) {
                    let text = item.trimmingSpaces()
                    guard let port = UInt16(text), port > 0 else {
                        throw StreamingError("invalid port \"\(text)\" in port-forward to pod \(args[0])/\(args[1]): want 1-65535")
                    }
                    ports.append(port)
                }
            }
            return .portForward(namespace: args[0], pod: args[1], uid: args.count == 3 ? args[2] : nil, ports: ports)
        }
        guard args.count == 3 || args.count == 4 else {
            throw StreamingError("malformed \(kind) path \(path): want /\(kind)/{namespace}/{pod}[/{uid}]/{container}")
        }
        let ref = ContainerRef(namespace: args[0], pod: args[1], uid: args.count == 4 ? args[2] : nil,
                               container: args[args.count - 1])
        var flags = StreamFlags(stdin: flag("input", "stdin"), stdout: flag("output", "stdout"),
                                stderr: flag("error", "stderr"), tty: flag("tty"))
        if flags.tty { flags.stderr = false }  // a terminal merges stderr into stdout
        guard flags.stdin || flags.stdout || flags.stderr else {
            throw StreamingError("\(kind) to \(ref) needs at least one of stdin, stdout, stderr (query input=1, output=1 or error=1)")
        }
        if kind == "attach" { return .attach(ref, streams: flags) }
        let command = values("command")
        guard !command.isEmpty else {
            throw StreamingError("exec in \(ref) has no command: add at least one command= query parameter")
        }
        return .exec(ref, command: command, streams: flags)
    }

    /// `a=1&b=x%20y` as ordered (name, value) pairs; `+` is a space.
    static func parseQuery(_ query: String) -> [(String, String)] {
        query.split(separator: "&", omittingEmptySubsequences: true).map { item in
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(String(kv[0]), plusIsSpace: true)
            let value = kv.count > 1 ? percentDecode(String(kv[1]), plusIsSpace: true) : ""
            return (name, value)
        }
    }

    static func percentDecode(_ s: String, plusIsSpace: Bool = false) -> String {
        guard s.utf8.contains(where: { $0 == 37 || (plusIsSpace && $0 == 43) }) else { return s }
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 37, i + 2 < bytes.count, let h = hexValue(bytes[i + 1]), let l = hexValue(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 3
                continue
            }
            out.append(plusIsSpace && b == 43 ? 32 : b)
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
