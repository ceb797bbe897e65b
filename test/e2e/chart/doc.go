// Package chart holds the end-to-end tests of charts/petfabric on a real control plane
// (test/cluster) with cert-manager's CRDs, and where a test needs certificates issued, its
// issuing controllers and cainjector running in-process (test/certmanager): server-side
// validation of every CI rendering, install/upgrade/uninstall on kwok nodes with everything
// left behind listed, each program run under the chart's own RBAC, and serving-certificate
// and CA rotation under a steady stream of admissions.
package chart
