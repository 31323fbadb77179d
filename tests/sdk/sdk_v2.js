// Drives Bootpay's Node SDK (npm `@bootpay/backend-js`) against a Bootpay server and prints
// one JSON object per call on stdout: {"call": NAME, "ok": BOOL, "result": ...}, where `ok`
// says whether the SDK's promise resolved and `result` is what it resolved or rejected with.
//
// Usage: node sdk_v2.js V2_URL token APPLICATION_ID PRIVATE_KEY
//        node sdk_v2.js V2_URL basic CLIENT_KEY SECRET_KEY
//
// The server must hold the receipts tests/sdk.rs loads: r-paid (status 1, 3000), r-confirm
// (status 2), r-unpaid (status 2) and r-partial (status 1, 10000); r-missing must be unknown.
// The SDK is loaded from SDK_NODE_DIR (tests/sdk/node, where scripts/dev-env.sh's
// ensure_sdks runs `npm ci`).
'use strict'

const path = require('path')

const sdkDir = process.env.SDK_NODE_DIR
if (!sdkDir) {
    console.error('sdk_v2.js: SDK_NODE_DIR is not set; install the SDKs with scripts/dev-env.sh\'s ensure_sdks')
    process.exit(2)
}
// Resolved, so a relative SDK_NODE_DIR is not taken for a package name.
const packageDir = path.resolve(sdkDir, 'node_modules', '@bootpay', 'backend-js')
let Bootpay
let version
try {
    Bootpay = require(packageDir).Bootpay
    version = require(path.join(packageDir, 'package.json')).version
} catch (error) {
    console.error(`sdk_v2.js: cannot load ${packageDir} (${error.message}); run scripts/dev-env.sh's ensure_sdks`)
    process.exit(2)
}

function emit(call, ok, result) {
    console.log(JSON.stringify({ call, ok, result }))
}

// The SDK rejects with Bootpay's error body, or with an object of its own for local checks;
// a thrown Error is reported by name and message.
async function call(name, action) {
    try {
        emit(name, true, await action())
    } catch (error) {
        const result = error instanceof Error ? { exception: error.name, message: error.message } : error
        emit(name, false, result)
    }
}

// `Bootpay` is one shared instance: each configuration replaces the last, and a token
// obtained earlier is dropped so no call rides on another configuration's token.
function configure(url, auth, key, secret) {
    Bootpay.API_ENTRYPOINTS.production = url
    Bootpay.setConfiguration(auth === 'token'
        ? { application_id: key, private_key: secret, mode: 'production' }
        : { client_key: key, secret_key: secret, mode: 'production' })
    Bootpay.setToken(undefined)
}

async function main() {
    const [url, auth, key, secret] = process.argv.slice(2)
    if (process.argv.length !== 6 || !['token', 'basic'].includes(auth)) {
        console.error('usage: node sdk_v2.js V2_URL token|basic KEY SECRET')
        process.exit(2)
    }
    emit('sdk', true, { package: '@bootpay/backend-js', version })

    configure(url, auth, key, secret)
    await call('token', () => Bootpay.getAccessToken())
    await call('token_again', () => Bootpay.getAccessToken())
    await call('lookup_paid', () => Bootpay.receiptPayment('r-paid'))
    await call('lookup_unknown', () => Bootpay.receiptPayment('r-missing'))
    await call('confirm', () => Bootpay.confirmPayment('r-confirm'))
    await call('confirm_again', () => Bootpay.confirmPayment('r-confirm'))
    await call('cancel_full', () => Bootpay.cancelPayment({
        receipt_id: 'r-paid', cancel_username: 'test', cancel_message: 'full'
    }))
    await call('cancel_again', () => Bootpay.cancelPayment({
        receipt_id: 'r-paid', cancel_username: 'test', cancel_message: 'again'
    }))
    await call('cancel_partial_1', () => Bootpay.cancelPayment({
        receipt_id: 'r-partial', cancel_price: 1000, cancel_id: 'p-1'
    }))
    await call('cancel_partial_2', () => Bootpay.cancelPayment({
        receipt_id: 'r-partial', cancel_price: 2000, cancel_id: 'p-2'
    }))
    await call('cancel_partial_repeat', () => Bootpay.cancelPayment({
        receipt_id: 'r-partial', cancel_price: 2000, cancel_id: 'p-2'
    }))
    await call('cancel_above_remainder', () => Bootpay.cancelPayment({
        receipt_id: 'r-partial', cancel_price: 7001, cancel_id: 'p-3'
    }))
    await call('cancel_unpaid', () => Bootpay.cancelPayment({ receipt_id: 'r-unpaid' }))
    await call('lookup_partial', () => Bootpay.receiptPayment('r-partial'))

    configure(url, auth, key, 'wrong-' + secret)
    await call('token_wrong_key', () => Bootpay.getAccessToken())
    if (auth === 'basic') {
        // With keys the SDK asks for no token: the first real call is what gets refused.
        await call('lookup_wrong_key', () => Bootpay.receiptPayment('r-paid'))
    }
}

main().catch((error) => {
    console.error(`sdk_v2.js: ${error && error.stack ? error.stack : JSON.stringify(error)}`)
    process.exit(1)
})
