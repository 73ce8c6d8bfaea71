// Package resource is the vocabulary translation and serving share: a Resource (one xDS
// resource at one version, serialised once in the shapes responses carry it in), the client
// Kinds and Localities resources are built for, the type URLs Holdfast serves, and Set, what a
// translation hands to serving. It holds no state and starts no goroutine; it imports neither
// translation nor serving.
package resource
