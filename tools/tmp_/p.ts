import puppeteer from "puppeteer-core";
const b = await puppeteer.launch({
  executablePath: "/usr/bin/chromium-headless-shell",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  userDataDir: await Deno.makeTempDir(),
});
const page = await b.newPage();
await page.setContent("<h1>hi</h1><script>console.error('boom')</script>");
console.log(await page.evaluate(() => document.querySelector("h1")!.textContent), await b.version());
await b.close();
