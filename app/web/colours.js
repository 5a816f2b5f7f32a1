// One stable colour per global id, the same rule as app/services/overlay.py (golden-angle hues).
export function colourOf(globalId) {
  return `hsl(${(globalId * 137.508) % 360}, 75%, 50%)`;
}
