// Command trellis-controller is the Trellis control plane (a thin main):
// `trellis-controller [flags]` runs one replica (controller/app);
// `trellis-controller uninstall` removes the CoreDNS block and every shadow
// Service after the Deployment is deleted.
//
// Imports: controller/app, controller/settings, client-go, the apiextensions
// client, prometheus, zap, the standard library.
package main
