// Binary frame messages (docs/protocol.md): ">4sBBHQQdB" header, camera id, then the JPEG.
const FIXED = 33;

export function parseFrame(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < FIXED) throw new Error("frame shorter than its header");
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (magic !== "SPOT") throw new Error(`bad magic ${magic}`);
  const headerLength = view.getUint16(6);
  const frameIndex = Number(view.getBigUint64(16));
  const camLength = view.getUint8(32);
  const cameraId = new TextDecoder().decode(new Uint8Array(buffer, FIXED, camLength));
  return { cameraId, frameIndex, jpeg: new Blob([buffer.slice(headerLength)], { type: "image/jpeg" }) };
}
