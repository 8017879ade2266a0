#!/usr/bin/env node
// Thin shim so the bin link exists before the first build; the CLI lives in src/cli.ts.
import '../dist/cli.js';
