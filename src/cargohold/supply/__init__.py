"""The supply chain: what an image contains (SBOM), what is known to be wrong with it
(vulnerability scan against an offline OSV database) and what it does badly (lint)."""
