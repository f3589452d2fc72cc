// List responses and raw JSON objects.

import EdgedCore

/// List metadata: the list's resourceVersion (to start a watch from) and the continue token of chunked lists.
public struct ListMeta: Codable, Sendable, Equatable {
    public var resourceVersion: String?
    public var `continue`: String?
    public var remainingItemCount: Int64?

    public init(resourceVersion: String? = nil, continue: String? = nil) {
        self.resourceVersion = resourceVersion
        self.continue = `continue`
    }
}

/// A list of objects (PodList, NodeList, ...). `KubeClient.list` joins continue chunks into one.
public struct ObjectList<Item: Codable & Sendable>: Codable, Sendable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ListMeta
    public var items: [Item]

    public init(metadata: ListMeta = ListMeta(), items: [Item] = []) {
        self.metadata = metadata
        self.items = items
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        metadata = try c.decodeIfPresent(ListMeta.self, forKey: .metadata) ?? ListMeta()
        // The API server writes "items": null for an empty list.
        items = try c.decodeIfPresent([Item].self, forKey: .items) ?? []
    }

    /// The list's resourceVersion: watch from here to see every change after the list.
    public var resourceVersion: String? { metadata.resourceVersion }
}
