// Where the browser tests find the repository and keep their files.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** tests/browser/ */
export const BROWSER_TESTS_DIR = path.resolve(here, '..');
/** The repository root (where Cargo.toml, config.toml and web/ live). */
export const REPO_ROOT = path.resolve(BROWSER_TESTS_DIR, '..', '..');
/** Files the tests read: the node config of the browser tests, the fake node. */
export const FIXTURES_DIR = path.join(BROWSER_TESTS_DIR, 'fixtures');
/** The screenshots of the pages at each layout, committed so the README can show them. */
export const SCREENSHOTS_DIR = path.join(REPO_ROOT, 'docs', 'screenshots');
/** Generated inputs kept between runs (the y4m clip). Gitignored. */
export const CACHE_DIR = path.join(BROWSER_TESTS_DIR, '.cache');
/** Logs and screenshots of the last run, for a person to look at. Gitignored. */
export const ARTIFACTS_DIR = path.join(BROWSER_TESTS_DIR, '.artifacts');

/** Create `dir` (and parents) if missing; returns it. */
export function ensureDir(dir) {
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A path under the artifacts directory, which is created if missing. */
export function artifact(name) {
  return path.join(ensureDir(ARTIFACTS_DIR), name);
}
