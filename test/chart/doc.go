// Package chart tests charts/petfabric offline: helm lint --strict and helm template of every
// ci/*-values.yaml, assertions on the rendered objects (decoded into their API types), and the
// values schema rejecting bad values. No control plane is needed; the pinned helm is.
package chart
