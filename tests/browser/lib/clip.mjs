// The fake camera: a 1280x720, 30 fps y4m clip made once with Debian's ffmpeg
// and cached in tests/browser/.cache/. Chromium loops it
// (--use-file-for-fake-video-capture). 720p is also enough for three
// simulcast layers (which need at least 960x540).
import { spawn } from 'node:child_process';
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { CACHE_DIR, ensureDir } from './paths.mjs';

export const CLIP_WIDTH = 1280;
export const CLIP_HEIGHT = 720;
export const CLIP_FPS = 30;
export const CLIP_SECONDS = 2;

/** Bytes of one raw yuv420p frame; a complete clip is at least this times the frame count. */
const FRAME_BYTES = (CLIP_WIDTH * CLIP_HEIGHT * 3) / 2;

/**
 * Path of the cached clip, making it first if it is missing or truncated.
 * @param {{ffmpeg?: string}} [opts] ffmpeg binary (default: `ffmpeg` on PATH)
 * @returns {Promise<string>}
 */
export async function ensureClip({ ffmpeg = process.env.FFMPEG || 'ffmpeg' } = {}) {
  const name = `testsrc2-${CLIP_WIDTH}x${CLIP_HEIGHT}-${CLIP_FPS}fps-${CLIP_SECONDS}s.y4m`;
  const clip = path.join(ensureDir(CACHE_DIR), name);
  const minBytes = FRAME_BYTES * CLIP_FPS * CLIP_SECONDS;
  if (existsSync(clip) && statSync(clip).size >= minBytes) return clip;

  // Write beside the final name and rename, so an interrupted run never leaves a half clip.
  const partial = `${clip}.partial-${process.pid}.y4m`;
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${CLIP_WIDTH}x${CLIP_HEIGHT}:rate=${CLIP_FPS}`,
    '-t', String(CLIP_SECONDS),
    '-pix_fmt', 'yuv420p',
    partial,
  ];
  try {
    await run(ffmpeg, args);
    if (statSync(partial).size < minBytes) {
      throw new Error(`ffmpeg wrote a short clip (${statSync(partial).size} bytes < ${minBytes})`);
    }
    renameSync(partial, clip);
  } finally {
    rmSync(partial, { force: true });
  }
  return clip;
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', (err) => reject(new Error(`cannot run ${cmd}: ${err.message} (install Debian's ffmpeg)`)));
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}
