// Failures as the real API server reports them: a metav1.Status body with code, reason, message and details.

/// An API failure, answered as a Status object with the same code/reason/message shape as kube-apiserver's.
struct APIError: Error {
    let code: Int
    let reason: String
    let message: String
    var details: KJSON? = nil

    var status: KJSON {
        var s: KJSON = .object([
            "kind": .string("Status"), "apiVersion": .string("v1"), "metadata": .object([:]),
            "status": .string("Failure"), "message": .string(message), "reason": .string(reason), "code": .int(code),
        ])
        if let details { s["details"] = details }
        return s
    }

    private static func details(_ r: KubeResource, _ name: String) -> KJSON {
        var d: KJSON = .object(["name": .string(name), "kind": .string(r.plural)])
        if !r.group.isEmpty { d["group"] = .string(r.group) }
        return d
    }

    private static func qualified(_ r: KubeResource) -> String { r.group.isEmpty ? r.plural : "\(r.plural).\(r.group)" }

    static func notFound(_ r: KubeResource, _ name: String) -> APIError {
        APIError(code: 404, reason: "NotFound", message: "\(qualified(r)) \"\(name)\" not found", details: details(r, name))
    }

    static func alreadyExists(_ r: KubeResource, _ name: String) -> APIError {
        APIError(code: 409, reason: "AlreadyExists", message: "\(qualified(r)) \"\(name)\" already exists",
                 details: details(r, name))
    }

    static func conflict(_ r: KubeResource, _ name: String, _ why: String) -> APIError {
        APIError(code: 409, reason: "Conflict", message: "Operation cannot be fulfilled on \(qualified(r)) \"\(name)\": \(why)",
                 details: details(r, name))
    }

    static func staleResourceVersion(_ r: KubeResource, _ name: String) -> APIError {
        conflict(r, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// One field problem of a 422 Invalid answer.
    struct Cause {
        let reason: String      // FieldValueRequired, FieldValueInvalid, FieldValueForbidden, ...
        let field: String
        let message: String     // "Required value", "Invalid value: ...", ...
    }

    static func invalid(kind: String, name: String, group: String = "", _ causes: [Cause]) -> APIError {
        // field.ErrorList.ToAggregate: a message repeated in the list is shown once (causes keep every entry).
        var list: [String] = []
        for text in causes.map({ "\($0.field): \($0.message)" }) where !list.contains(text) { list.append(text) }
        let joined = list.count == 1 ? list[0] : "[" + list.joined(separator: ", ") + "]"
        var d: KJSON = .object([
            "name": .string(name), "kind": .string(kind),
            "causes": .array(causes.map {
                .object(["reason": .string($0.reason), "message": .string($0.message), "field": .string($0.field)])
            }),
        ])
        if !group.isEmpty { d["group"] = .string(group) }
        let qualified = group.isEmpty ? kind : "\(kind).\(group)"   // schema.GroupKind.String()
        return APIError(code: 422, reason: "Invalid", message: "\(qualified) \"\(name)\" is invalid: \(joined)", details: d)
    }

    static func badRequest(_ message: String) -> APIError { APIError(code: 400, reason: "BadRequest", message: message) }

    static let unauthorized = APIError(code: 401, reason: "Unauthorized", message: "Unauthorized")

    static func expired(_ message: String) -> APIError { APIError(code: 410, reason: "Expired", message: message) }

    static func methodNotAllowed(_ method: String) -> APIError {
        APIError(code: 405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource")
    }

    static func pathNotFound(_ path: String) -> APIError {
        APIError(code: 404, reason: "NotFound", message: "the server could not find the requested resource",
                 details: .object(["causes": .array([.object(["reason": .string("UnexpectedServerResponse"),
                                                                "message": .string("404 page not found")])])]))
    }
}
