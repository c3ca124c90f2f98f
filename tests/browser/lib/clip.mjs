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

/**
 * A nicer camera for the screenshots: a baccarat table seen from above (felt, two dealt
 * hands, the rail) with a running timecode, 1280x720 at 30 fps. Made once with ffmpeg's
 * drawtext and Debian's DejaVu fonts, cached next to the test clip. The hands show the
 * player on 7 and the banker on 0, so the screenshot test deals "player".
 */
export async function ensureStudioClip({ ffmpeg = process.env.FFMPEG || 'ffmpeg', fonts = '/usr/share/fonts/truetype/dejavu' } = {}) {
  const clip = path.join(ensureDir(CACHE_DIR), `studio-${CLIP_WIDTH}x${CLIP_HEIGHT}-${CLIP_FPS}fps-${CLIP_SECONDS}s.y4m`);
  const minBytes = FRAME_BYTES * CLIP_FPS * CLIP_SECONDS;
  if (existsSync(clip) && statSync(clip).size >= minBytes) return clip;
  const font = (name) => `${fonts}/${name}`.replace(/:/g, '\\:');
  const text = (t, { file = 'DejaVuSans-Bold.ttf', color = '0x111111', size = 56, x, y, extra = '' }) =>
    `drawtext=fontfile=${font(file)}:text='${t}':fontcolor=${color}:fontsize=${size}:x=${x}:y=${y}${extra}`;
  const card = (x, rank, suit, red) => [
    `drawbox=x=${x}:y=170:w=130:h=185:color=white@1:t=fill`,
    text(rank, { color: red ? '0xc01818' : '0x111111', x: x + 15, y: 180 }),
    text(suit, { file: 'DejaVuSans.ttf', color: red ? '0xc01818' : '0x111111', size: 80, x: x + 37, y: 250 }),
  ];
  const filters = [
    'format=yuv420p',
    'drawbox=x=0:y=560:w=1280:h=160:color=0x3a2212@1:t=fill',
    'drawbox=x=0:y=556:w=1280:h=6:color=0xd8b25a@1:t=fill',
    text('PLAYER', { file: 'DejaVuSerif-Bold.ttf', color: '0xe6bf5c@0.85', size: 40, x: 250, y: 90 }),
    text('BANKER', { file: 'DejaVuSerif-Bold.ttf', color: '0xe6bf5c@0.85', size: 40, x: 850, y: 90 }),
    text('TIE PAYS 8 TO 1', { file: 'DejaVuSerif.ttf', color: '0xe6bf5c@0.6', size: 22, x: '(w-tw)/2', y: 40 }),
    'drawbox=x=636:y=80:w=4:h=420:color=0xe6bf5c@0.35:t=fill',
    ...card(225, 'K', '♠', false),
    ...card(375, '7', '♥', true),
    ...card(815, '9', '♦', true),
    ...card(965, 'A', '♣', false),
    text('7', { color: 'white', size: 34, x: 345, y: 385, extra: ':box=1:boxcolor=0x2f6fe0@0.9:boxborderw=10' }),
    text('0', { color: 'white', size: 34, x: 935, y: 385, extra: ':box=1:boxcolor=0xd9343f@0.9:boxborderw=10' }),
    'vignette=PI/5',
    text('CAM 1  %{pts\\:hms}', { file: 'DejaVuSansMono.ttf', color: 'white@0.8', size: 18, x: 24, y: 'h-36' }),
  ];
  return writeFiltered(ffmpeg, `gradients=s=${CLIP_WIDTH}x${CLIP_HEIGHT}:r=${CLIP_FPS}:c0=0x179155:c1=0x062a18:x0=640:y0=250:x1=640:y1=1000:type=radial:speed=0.0001`, filters, clip, minBytes);
}

/**
 * Render `source` (an ffmpeg lavfi source) through `filters` into `clip`, beside the final name
 * and renamed, so an interrupted run never leaves a half clip.
 */
async function writeFiltered(ffmpeg, source, filters, clip, minBytes) {
  const partial = `${clip}.partial-${process.pid}.y4m`;
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
    '-f', 'lavfi', '-i', source,
    '-vf', filters.join(','),
    '-t', String(CLIP_SECONDS),
    '-pix_fmt', 'yuv420p',
    partial,
  ];
  try {
    await run(ffmpeg, args);
    if (statSync(partial).size < minBytes) throw new Error(`ffmpeg wrote a short clip (${statSync(partial).size} bytes < ${minBytes})`);
    renameSync(partial, clip);
  } finally {
    rmSync(partial, { force: true });
  }
  return clip;
}

/** Bits of the counter clip's frame number, drawn as boxes across its top. */
export const COUNTER_BITS = 6;
/** Where bit `b`'s box is, as fractions of the picture: its centre. */
export function counterBitAt(b) {
  return { x: (40 + b * 70 + 25) / CLIP_WIDTH, y: (30 + 25) / CLIP_HEIGHT };
}

/**
 * The frame-counter camera: testsrc2 with its frame number (0..59, the clip loops every 2 s)
 * written large for the eye, and in binary as white boxes across the top for a test to read
 * from any layer (bit b lit when the frame number has it; `counterBitAt`). Made once with
 * ffmpeg's drawtext and drawbox, cached next to the other clips.
 */
export async function ensureCounterClip({ ffmpeg = process.env.FFMPEG || 'ffmpeg', fonts = '/usr/share/fonts/truetype/dejavu' } = {}) {
  const clip = path.join(ensureDir(CACHE_DIR), `counter-${CLIP_WIDTH}x${CLIP_HEIGHT}-${CLIP_FPS}fps-${CLIP_SECONDS}s.y4m`);
  const minBytes = FRAME_BYTES * CLIP_FPS * CLIP_SECONDS;
  if (existsSync(clip) && statSync(clip).size >= minBytes) return clip;
  const font = `${fonts}/DejaVuSansMono-Bold.ttf`.replace(/:/g, '\\:');
  const bits = [];
  for (let b = 0; b < COUNTER_BITS; b += 1) {
    bits.push(`drawbox=x=${40 + b * 70}:y=30:w=50:h=50:color=white@1:t=fill:enable='eq(mod(floor(n/${2 ** b}),2),1)'`);
  }
  const filters = [
    'format=yuv420p',
    `drawbox=x=20:y=10:w=${COUNTER_BITS * 70 + 30}:h=90:color=black@1:t=fill`,
    ...bits,
    `drawbox=x=440:y=200:w=400:h=300:color=black@1:t=fill`,
    `drawtext=fontfile=${font}:text='%{frame_num}':fontcolor=white:fontsize=240:x=(w-tw)/2:y=220`,
  ];
  return writeFiltered(ffmpeg, `testsrc2=size=${CLIP_WIDTH}x${CLIP_HEIGHT}:rate=${CLIP_FPS}`, filters, clip, minBytes);
}
