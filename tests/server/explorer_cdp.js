// Drives headless Chromium over its DevTools protocol through Orthanc
// Explorer's study page: the "Transfers accelerator" button, the list of
// peers, a send to one of them, the outcome shown on the page.
// Usage: node --experimental-websocket explorer_cdp.js <devtools ws url> <page url> <peer> [screenshot prefix]
// Prints the panel's text at each stage as JSON lines.
const [, , wsUrl, pageUrl, peer, shots] = process.argv;
const fs = require('fs');
const ws = new WebSocket(wsUrl);
let next = 0;
const pending = {};
function send(method, params = {}) {
  return new Promise((resolve) => {
    const id = ++next;
    pending[id] = resolve;
    ws.send(JSON.stringify({ id, method, params }));
  });
}
ws.onmessage = (message) => {
  const data = JSON.parse(message.data);
  if (data.id && pending[data.id]) {
    pending[data.id](data.result || data);
    delete pending[data.id];
  }
};
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function evaluate(expression) {
  const answer = await send('Runtime.evaluate', { expression, returnByValue: true });
  return answer.result && answer.result.value;
}
async function until(expression, what) {
  for (let i = 0; i < 300; i++) {
    if (await evaluate(expression)) return;
    await pause(100);
  }
  throw new Error('timed out waiting for ' + what);
}
async function shot(name) {
  if (!shots) return;
  const answer = await send('Page.captureScreenshot', { format: 'png' });
  fs.writeFileSync(shots + name + '.png', Buffer.from(answer.data, 'base64'));
}
const panel = "$('#transfers-accelerator-study')";
ws.onopen = async () => {
  try {
    await send('Page.enable');
    await send('Runtime.enable');
    await send('Emulation.setDeviceMetricsOverride', { width: 1100, height: 640, deviceScaleFactor: 1, mobile: false });
    await send('Page.navigate', { url: pageUrl });
    await until("typeof $ !== 'undefined' && $('#transfers-accelerator-button-study').length > 0 && $('#study-info li').length > 0", 'the button');
    console.log(JSON.stringify({ stage: 'button', text: await evaluate("$('#transfers-accelerator-button-study').text()") }));
    await evaluate("$('#transfers-accelerator-button-study').click()");
    await until(panel + ".find('a[data-peer]').length > 0", 'the peers');
    console.log(JSON.stringify({ stage: 'peers', text: await evaluate(panel + '.text()') }));
    await shot('peers');
    await evaluate(panel + ".find('a[data-peer=\"" + peer + "\"]').click()");
    await until('/Sent to|Failed|Not started/.test(' + panel + '.text())', 'the outcome');
    console.log(JSON.stringify({ stage: 'outcome', text: await evaluate(panel + '.text()') }));
    await shot('done');
    process.exit(0);
  } catch (error) {
    console.error(String(error));
    process.exit(1);
  }
};
