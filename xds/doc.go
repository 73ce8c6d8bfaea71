// Package xds holds everything that speaks xDS, cut where the data flows one way:
//
//   - resource: the vocabulary (a served resource, client kinds and localities, type URLs);
//   - translate: the cache's view → validated resources per client kind (pure);
//   - publish: the loop from the cache's views through translate into serve;
//   - serve: the ADS server (streams, subscriptions, ACK/NACK), with its codec in
//     serve/internal/wire;
//   - bootstrap: the files that point clients at Holdfast;
//   - admin: the admin API's proto and generated code, importable by other tools.
//
// docs/design.md has the import graph; a test keeps it.
package xds
