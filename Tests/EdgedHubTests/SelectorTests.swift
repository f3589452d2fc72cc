import EdgedCore
import EdgedHub
import EdgedTestSupport
import Foundation
import Testing

@Suite struct SelectorTests {
    // MARK: Label selectors

    static let labels: [String: String] = ["app": "web", "tier": "front", "env": "prod", "n": "5", "empty": ""]

    /// selector → does it match `labels`.
    static let labelMatches: [(String, Bool)] = [
        ("", true), ("   ", true),
        ("app=web", true), ("app==web", true), ("app = web", true), ("app=db", false), ("missing=x", false),
        ("app!=db", true), ("app!=web", false), ("missing!=x", true),
        ("app in (web,db)", true), ("app in (db)", false), ("app in(web)", true), ("app in ( web , db )", true),
        ("missing in (x)", false),
        ("app notin (db)", true), ("app notin (web,db)", false), ("missing notin (x)", true),
        ("app", true), ("missing", false), ("!missing", true), ("!app", false), ("! app", false),
        ("app=web,tier=front", true), ("app=web,tier=back", false), ("app=web, tier in (front), !missing", true),
        ("empty=", true), ("empty==", true), ("app=", false), ("empty in ()", true), ("empty in (,x)", true),
        ("empty", true), ("empty!=", false),
        ("n>4", true), ("n>5", false), ("n<6", true), ("n < 5", false), ("app>1", false), ("missing<1", false),
        ("app=in", false), ("in=x", false), ("notin notin (a)", true),
        ("example.com/key", false), ("!example.com/key", true), ("k8s.io/app-name.v1_x=y", false),
    ]

    @Test(arguments: labelMatches)
    func labelSelectorMatches(_ selector: String, _ expected: Bool) throws {
        let s = try LabelSelector(parsing: selector)
        #expect(s.matches(Self.labels) == expected, "\(selector)")
        #expect(s.matches(object: .object([("metadata", .object([("labels", Self.labelsJSON)]))])) == expected)
    }

    static var labelsJSON: JSONValue { .object(labels.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }) }

    /// selector → the API server's error text.
    static let labelErrors: [(String, String)] = [
        ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in x", "unable to parse requirement: found 'x' expected: '('"),
        ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in (x,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        ("a notin", "unable to parse requirement: found '' expected: '('"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("!!a", "unable to parse requirement: found '!', expected: identifier"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a b c", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("n>x", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"x\""),
        ("n<", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"\""),
        ("-a=b", "unable to parse requirement: invalid label key \"-a\": name part "
            + "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            + "character, at most 63 characters"),
        ("a@b", "unable to parse requirement: invalid label key \"a@b\": name part "
            + "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            + "character, at most 63 characters"),
        ("Example.COM/a=b", "unable to parse requirement: invalid label key \"Example.COM/a\": prefix part must be a "
            + "lowercase DNS-1123 subdomain"),
        ("example.com/=b", "unable to parse requirement: invalid label key \"example.com/\": name part "
            + "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            + "character, at most 63 characters"),
        ("a=b@c", "unable to parse requirement: invalid label value: \"b@c\": a valid label "
            + "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            + "character, at most 63 characters"),
        ("a in (x,-y)", "unable to parse requirement: invalid label value: \"-y\": a valid label "
            + "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            + "character, at most 63 characters"),
    ]

    @Test(arguments: labelErrors)
    func labelSelectorErrors(_ selector: String, _ message: String) {
        #expect {
            _ = try LabelSelector(parsing: selector)
        } throws: { error in
            (error as? SelectorError)?.message == message
        }
    }

    @Test func labelLengthLimits() throws {
        let name63 = String(repeating: "a", count: 63)
        #expect(try LabelSelector(parsing: "\(name63)=\(name63)").matches([name63: name63]))
        #expect(throws: SelectorError.self) { try LabelSelector(parsing: "\(name63)a=b") }
        #expect(throws: SelectorError.self) { try LabelSelector(parsing: "a=\(name63)b") }
        let prefix = Array(repeating: "abc", count: 63).joined(separator: ".")  // 251 characters
        #expect(try LabelSelector(parsing: "\(prefix)/k").matches(["\(prefix)/k": "v"]))
        #expect(throws: SelectorError.self) { try LabelSelector(parsing: "\(prefix).abc/k") }
    }

    @Test func labelsOfOddObjects() throws {
        let s = try LabelSelector(parsing: "app=web")
        let none = try LabelSelector(parsing: "!app")
        let odd: [JSONValue] = [
            .null, .string("x"), .array([]), .object([]),
            .object([("metadata", .string("x"))]),
            .object([("metadata", .object([("labels", .null)]))]),
            .object([("metadata", .object([("labels", .array([.string("app=web")]))]))]),
            .object([("metadata", .object([("labels", .object([("app", .number("1"))]))]))]),
        ]
        for o in odd {
            #expect(!s.matches(object: o))
            #expect(none.matches(object: o))
            #expect(try LabelSelector(parsing: "").matches(object: o))
        }
    }

    // MARK: Field selectors

    static let pod = try! JSONValue.parse("""
        {"kind":"Pod","metadata":{"name":"p1","namespace":"default","labels":{"a":"b"}},
         "spec":{"nodeName":"node-1","restartPolicy":"Always","priority":100},
         "status":{"phase":"Running","podIP":"10.1.0.5"}}
        """)
    static let event = try! JSONValue.parse("""
        {"kind":"Event","metadata":{"name":"e1","namespace":"default"},"type":"Warning","reason":"BackOff",
         "involvedObject":{"kind":"Pod","name":"p1","namespace":"default"},"source":{"component":"kubelet","host":"n1"}}
        """)
    static let node = try! JSONValue.parse("""
        {"kind":"Node","metadata":{"name":"n1"},"spec":{"unschedulable":true}}
        """)

    static let fieldMatches: [(String, JSONValue, Bool)] = [
        ("", pod, true),
        ("metadata.name=p1", pod, true), ("metadata.name==p1", pod, true), ("metadata.name!=p1", pod, false),
        ("metadata.name=p2", pod, false), ("metadata.namespace=default", pod, true),
        ("spec.nodeName=node-1,status.phase=Running", pod, true), ("spec.nodeName=node-1,status.phase!=Running", pod, false),
        ("spec.nodeName=", pod, false), ("spec.nodeName!=", pod, true),
        ("status.podIP=10.1.0.5", pod, true), ("spec.priority=100", pod, true),
        // Missing fields compare as "", except the booleans the API server defaults to false.
        ("status.nominatedNodeName=", pod, true), ("status.nominatedNodeName!=", pod, false),
        ("spec.hostNetwork=false", pod, true), ("spec.hostNetwork!=true", pod, true), ("spec.hostNetwork=", pod, false),
        ("spec.unschedulable=true", node, true), ("spec.unschedulable=false", node, false),
        ("metadata.namespace=", node, true), ("spec.unschedulable=false", pod, true),
        // Events.
        ("involvedObject.name=p1,involvedObject.kind=Pod", event, true), ("type=Warning", event, true),
        ("type=Normal", event, false), ("source=kubelet", event, true), ("reason!=BackOff", event, false),
        // An object value compares as "".
        ("metadata=", pod, true), ("spec.nodeName.x=", pod, true),
        // Escapes.
        ("metadata.name=a\\,b", .object([("metadata", .object([("name", .string("a,b"))]))]), true),
        ("metadata.name=a\\=b\\\\c", .object([("metadata", .object([("name", .string("a=b\\c"))]))]), true),
        ("metadata.name=a\\,b,metadata.namespace=x", .object([("metadata", .object([("name", .string("a,b")), ("namespace", .string("x"))]))]), true),
        // Odd objects.
        ("metadata.name=p1", .null, false), ("metadata.name!=p1", .array([]), true), ("metadata.name=", .string("x"), true),
        // A trailing comma or an empty term is ignored, like fields.ParseSelector.
        ("metadata.name=p1,", pod, true), (",,metadata.name=p1", pod, true),
    ]

    @Test(arguments: fieldMatches)
    func fieldSelectorMatches(_ selector: String, _ object: JSONValue, _ expected: Bool) throws {
        #expect(try FieldSelector(parsing: selector).matches(object: object) == expected, "\(selector)")
    }

    static let fieldErrors: [(String, String)] = [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
        ("a in (b)", "invalid selector: 'a in (b)'; can't understand 'a in (b)'"),
        ("a>1", "invalid selector: 'a>1'; can't understand 'a>1'"),
        ("=x", "invalid selector: '=x'; '=x' has no field name before '='"),
        ("a=b=c", "invalid field selector: unescaped character in value: '='"),
        ("a==b=c", "invalid field selector: unescaped character in value: '='"),
        ("a=b\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ]

    @Test(arguments: fieldErrors)
    func fieldSelectorErrors(_ selector: String, _ message: String) {
        #expect {
            _ = try FieldSelector(parsing: selector)
        } throws: { error in
            (error as? SelectorError)?.message == message
        }
    }

    @Test func emptinessAndExactMatches() throws {
        #expect(try LabelSelector(parsing: "").isEmpty)
        #expect(try !LabelSelector(parsing: "a").isEmpty)
        #expect(try FieldSelector(parsing: "").isEmpty)
        #expect(try FieldSelector(parsing: ",").isEmpty)
        let f = try FieldSelector(parsing: "metadata.namespace!=x,metadata.name==n1,spec.nodeName=a\\,b")
        #expect(!f.isEmpty)
        #expect(f.exactMatch("metadata.name") == "n1")
        #expect(f.exactMatch("spec.nodeName") == "a,b")
        #expect(f.exactMatch("metadata.namespace") == nil)
        #expect(f.exactMatch("status.phase") == nil)
    }

    // MARK: Same answers as the test API server

    /// Lists the test API server's pods with each selector and checks the hub's selectors pick the same ones.
    @Test func sameSelectionAsTheTestAPIServer() async throws {
        let server = try await KubeAPIServer.start()
        do {
            try compareSelections(server)
        } catch {
            Issue.record("comparison failed: \(error)")
        }
        try await server.shutdown()
    }

    func compareSelections(_ server: KubeAPIServer) throws {
        let ns = "sel-\(UInt32.random(in: 0...UInt32.max))"
        try server.put("/api/v1/namespaces", ["metadata": ["name": ns]])
        let specs: [(String, [String: String], String?, String, Bool)] = [
            ("p1", ["app": "web", "tier": "front"], "n1", "Running", false),
            ("p2", ["app": "web", "tier": "back"], "n2", "Pending", true),
            ("p3", ["app": "db"], "n1", "Running", false),
            ("p4", [:], nil, "Pending", false),
            ("p5", ["app": "", "env": "prod"], "n2", "Failed", true),
        ]
        for (name, labels, node, phase, hostNetwork) in specs {
            var spec: [String: Any] = ["containers": [["name": "c", "image": "busybox"]]]
            if let node { spec["nodeName"] = node }
            if hostNetwork { spec["hostNetwork"] = true }
            try server.put("/api/v1/namespaces/\(ns)/pods", [
                "metadata": ["name": name, "labels": labels], "spec": spec, "status": ["phase": phase],
            ])
        }
        let list = server.call("GET", "/api/v1/namespaces/\(ns)/pods")
        #expect(list.code == 200)
        guard case .array(let items)? = try JSONValue.parse([UInt8](list.body))["items"] else {
            Issue.record("no items in \(String(decoding: list.body, as: UTF8.self))")
            return
        }
        #expect(items.count == specs.count)

        func served(_ param: String, _ selector: String) throws -> [String]? {
            let q = selector.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? selector
            let r = server.call("GET", "/api/v1/namespaces/\(ns)/pods?\(param)=\(q)")
            guard r.code == 200 else { return nil }
            guard case .array(let got)? = try JSONValue.parse([UInt8](r.body))["items"] else { return nil }
            return got.compactMap { $0[path: ["metadata", "name"]]?.stringValue }.sorted()
        }
        func names(_ match: (JSONValue) -> Bool) -> [String] {
            items.filter(match).compactMap { $0["metadata"]?["name"]?.stringValue }.sorted()
        }

        // The server really selects (the comparison below is not between two empty lists).
        #expect(try served("labelSelector", "app=web") == ["p1", "p2"])
        #expect(try served("fieldSelector", "spec.nodeName=n1") == ["p1", "p3"])
        #expect(try served("labelSelector", "a in (x") == nil)

        let labelSelectors = [
            "", "app=web", "app==web", "app!=web", "app", "!app", "app in (web,db)", "app notin (web)", "app=",
            "tier=front,app=web", "app=web,!tier", "env", "app in (web),tier notin (back)", "missing",
            "a in (x", "a b", "a,", ",a",
        ]
        for s in labelSelectors {
            let mine = try? LabelSelector(parsing: s)
            let theirs = try served("labelSelector", s)
            #expect((mine == nil) == (theirs == nil), "label selector \(s): parse results differ")
            if let mine, let theirs {
                #expect(names { mine.matches(object: $0) } == theirs, "label selector \(s)")
            }
        }

        let fieldSelectors = [
            "", "metadata.name=p1", "metadata.name!=p1", "spec.nodeName=n1", "spec.nodeName=", "spec.nodeName!=",
            "status.phase=Running", "status.phase!=Running,spec.nodeName=n2", "spec.hostNetwork=true",
            "spec.hostNetwork=false", "spec.hostNetwork!=false", "metadata.namespace=\(ns)", "metadata.name==p3",
            "metadata.name",
        ]
        for s in fieldSelectors {
            let mine = try? FieldSelector(parsing: s)
            let theirs = try served("fieldSelector", s)
            #expect((mine == nil) == (theirs == nil), "field selector \(s): parse results differ")
            if let mine, let theirs {
                #expect(names { mine.matches(object: $0) } == theirs, "field selector \(s)")
            }
        }
    }
}
