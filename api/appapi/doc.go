// Package appapi is the wire contract of stellar-appd's local API
// (appd.sock): the application spec (the original Stellar's JSON format),
// its validation (shared by sctl and appd, so both give the same precise
// errors), the instance records appd publishes in the cluster state, and a
// typed client.
//
// Cluster-state keys written by appd (see package gossipapi):
//   - apps/<app>: a Record (the spec, the previous spec for auto_revert,
//     restart generations);
//   - nodes/<node>/instances/<app>/<service>/<index>: an Instance;
//   - nodes/<node>/declined/<app>/<service>: a Decline (this node cannot run
//     the service; placement skips it);
//   - schedule/<node>: a Schedule (cordon or drain).
package appapi
