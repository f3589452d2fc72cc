// Pod toleration validation of the test API server, at create and on spec updates (PUT and every PATCH type).
//
// Copied from pkg/apis/core/validation/validation.go and the apimachinery validators it calls:
// - ValidateTolerations (part of ValidatePodSpec, so on create and update): a non-empty key must be a qualified name
//   (IsQualifiedName: optional DNS-1123 subdomain prefix and '/', a name part of at most 63 characters
//   [A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]); an empty key needs operator Exists; tolerationSeconds only with effect
//   NoExecute; operator Equal (or empty) needs a valid label value, Exists an empty value, anything else is
//   Unsupported ("Equal", "Exists"); a non-empty effect must be NoSchedule, PreferNoSchedule or NoExecute.
// - validateOnlyAddedTolerations (ValidatePodUpdate): every old toleration must still be in the new list, equal in
//   key, operator, value and effect; its tolerationSeconds may take any value, be added or be removed (no check that
//   it only shrinks: the code compares the old toleration with tolerationSeconds set to the new one's). New
//   tolerations may be added. A missing or changed one answers `spec.tolerations: Forbidden: existing toleration
//   can not be modified except its tolerationSeconds` and stops there; otherwise the new list goes through
//   ValidateTolerations a second time.
// - As the real ValidatePodUpdate runs ValidatePodSpec (ValidateTolerations) and then validateOnlyAddedTolerations
//   (ValidateTolerations again), an invalid toleration in an update is listed twice in details.causes and once in
//   the message (field.ErrorList.ToAggregate drops repeated messages; APIError.invalid does the same).
// - Messages: "<field>: Invalid value: <value>: <detail>", "Unsupported value: "X": supported values: "A", "B"",
//   "Forbidden: <detail>", values quoted like Go's %q.
// NOT copied: JSON type errors (a tolerationSeconds that is not a number is treated as absent, not 400), the
// annotation form of tolerations (scheduler.alpha.kubernetes.io/tolerations).

import Foundation

/// One toleration as the API's internal type holds it (absent strings are "", absent seconds nil).
struct PodToleration: Equatable {
    var key: String
    var op: String
    var value: String
    var effect: String
    var seconds: Int?

    init(_ j: KJSON) {
        key = j["key"]?.string ?? ""
        op = j["operator"]?.string ?? ""
        value = j["value"]?.string ?? ""
        effect = j["effect"]?.string ?? ""
        seconds = j["tolerationSeconds"].flatMap { $0.isNull ? nil : $0.int }
    }
}

extension KubeAPIServerCore {
    /// ValidateTolerations for the list at `field` (e.g. "spec.tolerations").
    static func validateTolerations(_ list: [KJSON], field: String) -> [APIError.Cause] {
        var causes: [APIError.Cause] = []
        func invalid(_ f: String, _ value: String, _ detail: String) {
            causes.append(.init(reason: "FieldValueInvalid", field: f, message: "Invalid value: \(goQuote(value)): \(detail)"))
        }
        for (i, raw) in list.enumerated() {
            let t = PodToleration(raw), idx = "\(field)[\(i)]"
            if !t.key.isEmpty {
                for msg in KubeNames.qualifiedNameErrors(t.key) { invalid("\(idx).key", t.key, msg) }
            }
            if t.key.isEmpty && t.op != "Exists" {
                invalid("\(idx).operator", t.op, "operator must be Exists when `key` is empty, which means \"match all values and all keys\"")
            }
            if t.seconds != nil && t.effect != "NoExecute" {
                invalid("\(idx).effect", t.effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
            }
            switch t.op {
            case "Equal", "":
                let errs = KubeNames.labelValueErrors(t.value)
                if !errs.isEmpty { invalid("\(idx).operator", t.value, errs.joined(separator: ";")) }
            case "Exists":
                if !t.value.isEmpty { invalid("\(idx).operator", t.value, "value must be empty when `operator` is 'Exists'") }
            default:
                causes.append(notSupported("\(idx).operator", t.op, ["Equal", "Exists"]))
            }
            if !t.effect.isEmpty, !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(t.effect) {
                causes.append(notSupported("\(idx).effect", t.effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
            }
        }
        return causes
    }

    /// validateOnlyAddedTolerations: the causes for a pod spec update from `old` to `new` tolerations.
    static func validateOnlyAddedTolerations(new: [KJSON], old: [KJSON], field: String) -> [APIError.Cause] {
        let newOnes = new.map(PodToleration.init)
        for o in old.map(PodToleration.init) {
            let kept = newOnes.contains { n in
                var clone = o
                clone.seconds = n.seconds
                return clone == n
            }
            if !kept {
                return [.init(reason: "FieldValueForbidden", field: field,
                              message: "Forbidden: existing toleration can not be modified except its tolerationSeconds")]
            }
        }
        return validateTolerations(new, field: field)
    }

    /// field.NotSupported's cause.
    static func notSupported(_ field: String, _ value: String, _ supported: [String]) -> APIError.Cause {
        .init(reason: "FieldValueNotSupported", field: field,
              message: "Unsupported value: \(goQuote(value)): supported values: " + supported.map(goQuote).joined(separator: ", "))
    }

    /// A string as Go's %q prints it (the values in field error messages).
    static func goQuote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// apimachinery's name validators (k8s.io/apimachinery/pkg/util/validation), with their messages.
enum KubeNames {
    static let qualifiedNameFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    static let qualifiedNameErrMsg = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    static let labelValueErrMsg = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    static let dns1123LabelFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    static let dns1123SubdomainFmt = dns1123LabelFmt + "(\\." + dns1123LabelFmt + ")*"
    static let dns1123SubdomainErrMsg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"

    static func maxLenError(_ n: Int) -> String { "must be no more than \(n) characters" }

    static func regexError(_ msg: String, _ fmt: String, _ examples: String...) -> String {
        if examples.isEmpty { return msg + " (regex used for validation is '\(fmt)')" }
        var out = msg + " (e.g. "
        for (i, e) in examples.enumerated() {
            if i > 0 { out += " or " }   // after "', ": the real messages have two spaces there
            out += "'\(e)', "
        }
        return out + "regex used for validation is '\(fmt)')"
    }

    private static func isAlnum(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }

    /// ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$
    static func matchesQualifiedName(_ s: String) -> Bool {
        let u = Array(s.unicodeScalars)
        guard let f = u.first, let l = u.last, isAlnum(f), isAlnum(l) else { return false }
        return u.allSatisfy { isAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    /// ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$
    static func matchesDNS1123Subdomain(_ s: String) -> Bool {
        func lowerAlnum(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("0"..."9").contains(c) }
        let labels = s.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            let u = Array(label.unicodeScalars)
            guard let f = u.first, let l = u.last, lowerAlnum(f), lowerAlnum(l) else { return false }
            return u.allSatisfy { lowerAlnum($0) || $0 == "-" }
        }
    }

    /// IsDNS1123Subdomain.
    static func dns1123SubdomainErrors(_ s: String) -> [String] {
        var errs: [String] = []
        if s.utf8.count > 253 { errs.append(maxLenError(253)) }
        if !matchesDNS1123Subdomain(s) { errs.append(regexError(dns1123SubdomainErrMsg, dns1123SubdomainFmt, "example.com")) }
        return errs
    }

    /// IsQualifiedName (label keys, toleration keys).
    static func qualifiedNameErrors(_ value: String) -> [String] {
        var errs: [String] = []
        let parts = value.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let name: String
        switch parts.count {
        case 1: name = parts[0]
        case 2:
            name = parts[1]
            if parts[0].isEmpty { errs.append("prefix part must be non-empty") }
            else { errs += dns1123SubdomainErrors(parts[0]).map { "prefix part " + $0 } }
        default:
            return ["a qualified name " + regexError(qualifiedNameErrMsg, qualifiedNameFmt, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
        }
        if name.isEmpty { errs.append("name part must be non-empty") }
        else if name.utf8.count > 63 { errs.append("name part " + maxLenError(63)) }
        if !matchesQualifiedName(name) {
            errs.append("name part " + regexError(qualifiedNameErrMsg, qualifiedNameFmt, "MyName", "my.name", "123-abc"))
        }
        return errs
    }

    /// IsValidLabelValue.
    static func labelValueErrors(_ value: String) -> [String] {
        var errs: [String] = []
        if value.utf8.count > 63 { errs.append(maxLenError(63)) }
        if !value.isEmpty && !matchesQualifiedName(value) {
            errs.append(regexError(labelValueErrMsg, "(" + qualifiedNameFmt + ")?", "MyValue", "my_value", "12345"))
        }
        return errs
    }
}
