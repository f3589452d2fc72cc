// edgectl: the on-site CLI for edged. Exit codes: 0 ok, 1 failure or degraded, 2 usage error or edged unreachable.

import ArgumentParser

await Edgectl.runAndExit()
