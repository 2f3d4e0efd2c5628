// Package forward is the last step of the data path: it carries a request
// or connection to a chosen endpoint. Direct connects straight to the pod;
// a later implementation will connect through the destination node's proxy
// over mTLS, presenting the source identity in Destination. Callers depend
// on the HTTP and Dialer interfaces only.
//
// Stage: forward. Imports: node-proxy/balance, node-proxy/config, stdlib.
package forward
