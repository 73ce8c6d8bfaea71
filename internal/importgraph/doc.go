// Package importgraph holds the test that keeps Holdfast's imports flowing one way and the
// table of packages in docs/design.md true. It has no code of its own.
package importgraph
