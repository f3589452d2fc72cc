// edgectl's version (`edgectl --version`, `edgectl version`). VERSION (repository root) is the source of truth;
// cross/stamp-version.sh rewrites this file, Sources/EdgedDaemon/Version.swift and VERSION together.
// A test checks that the three agree.

let edgectlVersion = "0.1.0"
