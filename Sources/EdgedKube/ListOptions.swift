// Query parameters of list and watch requests.

/// Options of a LIST (and the selector part of a WATCH).
public struct ListOptions: Sendable, Equatable {
    /// "app=web,tier!=db", "env in (a,b)", "!legacy" (see `LabelSelector`).
    public var labelSelector: String?
    /// "spec.nodeName=node1", "metadata.name=x".
    public var fieldSelector: String?
    /// Page size: the client follows `continue` tokens until the list is complete.
    public var limit: Int?
    /// "" or nil: the newest data (a quorum read); "0": any cached version.
    public var resourceVersion: String?

    public init(labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int? = nil, resourceVersion: String? = nil) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.resourceVersion = resourceVersion
    }
}

/// Options of a WATCH.
public struct WatchOptions: Sendable, Equatable {
    /// Start after this version (usually a list's resourceVersion); nil means "current state as ADDED, then changes".
    public var resourceVersion: String?
    public var labelSelector: String?
    public var fieldSelector: String?
    /// Ask for BOOKMARK events that carry the newest resourceVersion (cheap re-watch after a timeout).
    public var allowWatchBookmarks: Bool
    /// The server ends the stream after this long; the informer starts a new one.
    public var timeoutSeconds: Int?

    public init(resourceVersion: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil,
                allowWatchBookmarks: Bool = true, timeoutSeconds: Int? = nil) {
        self.resourceVersion = resourceVersion
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.allowWatchBookmarks = allowWatchBookmarks
        self.timeoutSeconds = timeoutSeconds
    }
}

/// Builds a query string from (name, value) pairs, escaping values.
struct Query {
    var items: [(String, String)] = []

    mutating func add(_ name: String, _ value: String?) {
        if let value { items.append((name, value)) }
    }

    var text: String {
        items.isEmpty ? "" : "?" + items.map { "\($0.0)=\(PathEscape.query($0.1))" }.joined(separator: "&")
    }
}

/// Builders for label and field selector strings.
public enum LabelSelector {
    /// "k1=v1,k2=v2" (sorted by key, so equal maps give equal strings).
    public static func matching(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}

public enum FieldSelector {
    /// "spec.nodeName=NODE": the pods bound to one node.
    public static func podsOnNode(_ node: String) -> String { "spec.nodeName=\(node)" }
    /// "metadata.name=NAME": one object, for a watch of a single object.
    public static func name(_ name: String) -> String { "metadata.name=\(name)" }
}
