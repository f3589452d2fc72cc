// RBAC of the test API server for every user the fixed policy (KubeAPIServer+Auth.swift: system:masters,
// bootstrappers, anonymous, the node authorizer) does not already allow: rbac.authorization.k8s.io/v1 ClusterRoles,
// ClusterRoleBindings, Roles and RoleBindings are stored like any object and grant what they say, as with
// --authorization-mode=Node,RBAC (the node authorizer first, then RBAC).
//
// Copied from plugin/pkg/auth/authorizer/rbac/rbac.go (RBACAuthorizer.Authorize, RuleAllows),
// pkg/registry/rbac/validation/rule.go (VisitRulesFor, GetRoleReferenceRules, appliesToUser),
// pkg/apis/rbac/v1/evaluation_helpers.go (VerbMatches, APIGroupMatches, ResourceMatches, ResourceNameMatches),
// pkg/apis/rbac/v1/defaults.go and pkg/apis/rbac/validation/validation.go:
// - A request is allowed when a rule of a ClusterRole bound by a ClusterRoleBinding, or (for a request in a
//   namespace) of a Role or ClusterRole bound by a RoleBinding in that namespace, allows it. A rule allows when its
//   verbs contain the verb or "*", its apiGroups the group or "*", its resources the resource ("pods"), the
//   "resource/subresource" form ("pods/status"), "*" or "*/<subresource>", and its resourceNames are empty or
//   contain the request's name. A request without a name (create, list, watch without a metadata.name field
//   selector) is therefore not allowed by a rule with resourceNames; a list or watch pinned with
//   fieldSelector=metadata.name=<n> counts as being about <n>, as the real RequestInfo does. A request about a
//   namespace (GET /api/v1/namespaces/x) is in that namespace.
// - Subjects: User by name, Group by the user's groups, ServiceAccount as system:serviceaccount:<ns>:<name>, its
//   namespace defaulting to the RoleBinding's (in a ClusterRoleBinding it must be given). A roleRef to a missing
//   role grants nothing.
// - Defaults: roleRef.apiGroup and the apiGroup of User and Group subjects default to rbac.authorization.k8s.io.
//   Validation (422 Invalid): names are path segments (not "." or "..", no '/' or '%'; "system:…" is fine), rules
//   need verbs and, without nonResourceURLs, apiGroups and resources (Roles may not have nonResourceURLs);
//   roleRef.apiGroup must be rbac.authorization.k8s.io, roleRef.kind Role or ClusterRole (ClusterRole only in a
//   ClusterRoleBinding), roleRef.name is required; subjects need a name and a known kind with the right apiGroup, a
//   ServiceAccount subject of a ClusterRoleBinding a namespace; roleRef cannot change on update.
// - RBAC answers SubjectAccessReviews too (besides the grant list of KubeAPIServer+Reviews.swift).
// NOT copied: escalation checks (anyone allowed to create a Role or binding may grant anything; the real server
// needs the creator to hold the permissions or the escalate/bind verbs), aggregated ClusterRoles (aggregationRule is
// stored, nothing fills in its rules), nonResourceURLs (stored, never evaluated: non-resource paths keep the fixed
// policy), the default bootstrap roles and bindings (cluster-admin, admin, edit, view, system:*: none exist until a
// test creates them), and the "RBAC: allowed by ..." reasons in audit annotations.

import Foundation

extension KubeAPIServerCore {
    static let rbacGroup = "rbac.authorization.k8s.io"
    static let clusterRoles = KubeResource.find(group: rbacGroup, version: "v1", plural: "clusterroles")!
    static let clusterRoleBindings = KubeResource.find(group: rbacGroup, version: "v1", plural: "clusterrolebindings")!
    static let roles = KubeResource.find(group: rbacGroup, version: "v1", plural: "roles")!
    static let roleBindings = KubeResource.find(group: rbacGroup, version: "v1", plural: "rolebindings")!

    // MARK: Authorization

    /// RBACAuthorizer.Authorize for a resource request. `namespace` "" or nil: cluster-wide (ClusterRoleBindings only).
    /// The store lock must be held.
    func rbacAllows(user: String, groups: [String], verb: String, group: String, resource: String,
                    subresource: String?, name: String?, namespace: String?) -> Bool {
        let combined = subresource.map { "\(resource)/\($0)" } ?? resource
        func allows(_ rule: KJSON) -> Bool {
            func list(_ k: String) -> [String] { (rule[k]?.array ?? []).compactMap(\.string) }
            let verbs = list("verbs"), groupsOfRule = list("apiGroups"), resources = list("resources")
            let names = list("resourceNames")
            guard verbs.contains("*") || verbs.contains(verb) else { return false }
            guard groupsOfRule.contains("*") || groupsOfRule.contains(group) else { return false }
            let resourceMatches = resources.contains { r in
                if r == "*" || r == combined { return true }
                guard let sub = subresource, !sub.isEmpty else { return false }
                return r == "*/\(sub)"
            }
            guard resourceMatches else { return false }
            return names.isEmpty || names.contains(name ?? "")
        }
        func applies(_ binding: KJSON, namespace: String) -> Bool {
            (binding["subjects"]?.array ?? []).contains { s in
                let subjectName = s["name"]?.string ?? ""
                switch s["kind"]?.string ?? "" {
                case "User": return user == subjectName
                case "Group": return groups.contains(subjectName)
                case "ServiceAccount":
                    let ns = (s["namespace"]?.string).flatMap { $0.isEmpty ? nil : $0 } ?? namespace
                    return !ns.isEmpty && user == "system:serviceaccount:\(ns):\(subjectName)"
                default: return false
                }
            }
        }
        func rules(of ref: KJSON?, bindingNamespace: String?) -> [KJSON] {
            let refName = ref?["name"]?.string ?? ""
            switch ref?["kind"]?.string ?? "" {
            case "ClusterRole": return store.get(Self.clusterRoles, namespace: nil, name: refName)?["rules"]?.array ?? []
            case "Role":
                guard let ns = bindingNamespace else { return [] }
                return store.get(Self.roles, namespace: ns, name: refName)?["rules"]?.array ?? []
            default: return []
            }
        }
        for (_, binding) in store.all(Self.clusterRoleBindings, namespace: nil) where applies(binding, namespace: "") {
            if binding[path: ["roleRef", "kind"]]?.string == "ClusterRole",
               rules(of: binding["roleRef"], bindingNamespace: nil).contains(where: allows) { return true }
        }
        guard let namespace, !namespace.isEmpty else { return false }
        for (_, binding) in store.all(Self.roleBindings, namespace: namespace) where applies(binding, namespace: namespace) {
            if rules(of: binding["roleRef"], bindingNamespace: namespace).contains(where: allows) { return true }
        }
        return false
    }

    /// The namespace of a request as the real RequestInfo has it: a namespace object's own name for
    /// /api/v1/namespaces/<name>[/status], else the path's namespace.
    static func requestNamespace(_ t: APITarget) -> String? {
        if t.resource.kind == "Namespace" { return t.name }
        return t.namespace
    }

    // MARK: Objects

    /// Defaults and validation of an RBAC object on create (`old` nil) and update (the store lock is held).
    static func prepareRBACObject(_ r: KubeResource, _ obj: inout KJSON, old: KJSON?, name: String) throws {
        var causes: [APIError.Cause] = []
        switch r.kind {
        case "Role", "ClusterRole":
            for (i, rule) in (obj["rules"]?.array ?? []).enumerated() {
                func count(_ k: String) -> Int { rule[k]?.array?.count ?? 0 }
                let p = "rules[\(i)]"
                if count("verbs") == 0 {
                    causes.append(.init(reason: "FieldValueRequired", field: "\(p).verbs", message: "Required value: verbs must contain at least one value"))
                }
                if count("nonResourceURLs") > 0 {
                    let urls = (rule["nonResourceURLs"]?.array ?? []).map { goQuote($0.string ?? "") }.joined(separator: ", ")
                    if r.kind == "Role" {
                        causes.append(.init(reason: "FieldValueInvalid", field: "\(p).nonResourceURLs",
                                            message: "Invalid value: []string{\(urls)}: namespaced rules cannot apply to non-resource URLs"))
                    }
                    if count("apiGroups") > 0 || count("resources") > 0 || count("resourceNames") > 0 {
                        causes.append(.init(reason: "FieldValueInvalid", field: "\(p).nonResourceURLs",
                                            message: "Invalid value: []string{\(urls)}: rules cannot apply to both regular resources and non-resource URLs"))
                    }
                    continue
                }
                if count("apiGroups") == 0 {
                    causes.append(.init(reason: "FieldValueRequired", field: "\(p).apiGroups", message: "Required value: resource rules must supply at least one api group"))
                }
                if count("resources") == 0 {
                    causes.append(.init(reason: "FieldValueRequired", field: "\(p).resources", message: "Required value: resource rules must supply at least one resource"))
                }
            }
        default:   // RoleBinding, ClusterRoleBinding
            let cluster = r.kind == "ClusterRoleBinding"
            var ref = obj["roleRef"] ?? .object([:])
            if (ref["apiGroup"]?.string ?? "").isEmpty { ref["apiGroup"] = .string(rbacGroup) }
            obj["roleRef"] = ref
            if let subjects = obj["subjects"]?.array {
                obj["subjects"] = .array(subjects.map { s in
                    var s = s
                    if (s["apiGroup"]?.string ?? "").isEmpty, ["User", "Group"].contains(s["kind"]?.string ?? "") {
                        s["apiGroup"] = .string(rbacGroup)
                    }
                    return s
                })
            }
            let refGroup = ref["apiGroup"]?.string ?? "", refKind = ref["kind"]?.string ?? "", refName = ref["name"]?.string ?? ""
            if refGroup != rbacGroup { causes.append(notSupported("roleRef.apiGroup", refGroup, [rbacGroup])) }
            let kinds = cluster ? ["ClusterRole"] : ["Role", "ClusterRole"]
            if !kinds.contains(refKind) { causes.append(notSupported("roleRef.kind", refKind, kinds)) }
            if refName.isEmpty {
                causes.append(.init(reason: "FieldValueRequired", field: "roleRef.name", message: "Required value"))
            } else {
                for msg in pathSegmentNameErrors(refName) {
                    causes.append(.init(reason: "FieldValueInvalid", field: "roleRef.name", message: "Invalid value: \(goQuote(refName)): \(msg)"))
                }
            }
            for (i, s) in (obj["subjects"]?.array ?? []).enumerated() {
                let p = "subjects[\(i)]", subjectName = s["name"]?.string ?? "", group = s["apiGroup"]?.string ?? ""
                if subjectName.isEmpty { causes.append(.init(reason: "FieldValueRequired", field: "\(p).name", message: "Required value")) }
                switch s["kind"]?.string ?? "" {
                case "ServiceAccount":
                    if !subjectName.isEmpty, !isDNSSubdomain(subjectName) {
                        causes.append(.init(reason: "FieldValueInvalid", field: "\(p).name",
                                            message: "Invalid value: \(goQuote(subjectName)): " + KubeNames.regexError(KubeNames.dns1123SubdomainErrMsg, KubeNames.dns1123SubdomainFmt, "example.com")))
                    }
                    if !group.isEmpty { causes.append(notSupported("\(p).apiGroup", group, [""])) }
                    if cluster, (s["namespace"]?.string ?? "").isEmpty {
                        causes.append(.init(reason: "FieldValueRequired", field: "\(p).namespace", message: "Required value"))
                    }
                case "User", "Group":
                    if group != rbacGroup { causes.append(notSupported("\(p).apiGroup", group, [rbacGroup])) }
                default:
                    causes.append(notSupported("\(p).kind", s["kind"]?.string ?? "", ["ServiceAccount", "User", "Group"]))
                }
            }
            if let old, let oldRef = old["roleRef"], oldRef != ref {
                let shown = "rbac.RoleRef{APIGroup:\(goQuote(refGroup)), Kind:\(goQuote(refKind)), Name:\(goQuote(refName))}"
                causes.append(.init(reason: "FieldValueInvalid", field: "roleRef", message: "Invalid value: \(shown): cannot change roleRef"))
            }
        }
        if !causes.isEmpty { throw APIError.invalid(kind: r.kind, name: name, group: r.group, causes) }
    }

    /// path.IsValidPathSegmentName: RBAC object names (ValidateRBACName).
    static func pathSegmentNameErrors(_ name: String) -> [String] {
        for bad in [".", ".."] where name == bad { return ["may not be '\(bad)'"] }
        return ["/", "%"].filter { name.contains($0) }.map { "may not contain '\($0)'" }
    }
}
