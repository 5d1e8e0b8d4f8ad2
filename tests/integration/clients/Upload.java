// A 5 MiB POST through a proxy, without Expect: 100-continue, with Java 17's two HTTP APIs.
// java Upload.java PROXY_HOST PROXY_PORT URL [USER PASSWORD]
// Prints "httpclient STATUS" and "urlconnection STATUS" (or the exception's class and message).
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.Proxy;
import java.net.ProxySelector;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.io.OutputStream;
import java.time.Duration;
import java.util.Base64;

public class Upload {
    public static void main(String[] a) throws Exception {
        String host = a[0];
        int port = Integer.parseInt(a[1]);
        String url = a[2];
        String auth = a.length > 4
            ? "Basic " + Base64.getEncoder().encodeToString((a[3] + ":" + a[4]).getBytes("UTF-8")) : null;
        byte[] body = new byte[5 << 20];
        java.util.Arrays.fill(body, (byte) 'z');
        try {
            HttpClient c = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .proxy(ProxySelector.of(new InetSocketAddress(host, port))).build();
            HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url))
                .POST(HttpRequest.BodyPublishers.ofByteArray(body)).timeout(Duration.ofSeconds(60));
            if (auth != null)
                b.header("Proxy-Authorization", auth);
            HttpResponse<String> r = c.send(b.build(), HttpResponse.BodyHandlers.ofString());
            System.out.println("httpclient " + r.statusCode());
        } catch (Exception e) {
            System.out.println("httpclient " + e.getClass().getName() + ": " + e.getMessage());
        }
        try {
            HttpURLConnection u = (HttpURLConnection) new URL(url)
                .openConnection(new Proxy(Proxy.Type.HTTP, new InetSocketAddress(host, port)));
            u.setDoOutput(true);
            u.setRequestMethod("POST");
            u.setFixedLengthStreamingMode(body.length);
            u.setConnectTimeout(10000);
            u.setReadTimeout(60000);
            if (auth != null)
                u.setRequestProperty("Proxy-Authorization", auth);
            try (OutputStream os = u.getOutputStream()) {
                os.write(body);
            } catch (java.io.IOException e) {
                // the proxy answered before the body was sent: the answer may still be readable
            }
            System.out.println("urlconnection " + u.getResponseCode());
        } catch (Exception e) {
            System.out.println("urlconnection " + e.getClass().getName() + ": " + e.getMessage());
        }
    }
}
